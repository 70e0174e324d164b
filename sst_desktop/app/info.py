"""What the UI asks once at start: version, mode, palette, model variants, defaults, and the
masks given to `--view`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from sst_desktop import __version__, paths
from sst_desktop.app import media, viewer
from sst_desktop.app.base import ApiBase
from sst_desktop.app.exposed import exposed
from sst_desktop.data import palette, registry
from sst_desktop.data.spec import MASK_MODES
from sst_desktop.engine import candidates, checkpoints, models
from sst_desktop.errors import UserError

log = logging.getLogger(__name__)


def device_choices() -> list[str]:
    """Devices to offer without importing torch (the window must not wait for it)."""
    if "torch" in sys.modules:
        # Lazy: torch is already loaded here, so sam2_model costs nothing more.
        from sst_desktop.engine import sam2_model

        return sam2_model.available_devices()
    devices = ["auto"]
    if os.path.exists("/proc/driver/nvidia") or sys.platform == "win32":
        devices.append("cuda")
    if sys.platform == "darwin":
        devices.append("mps")
    devices.append("cpu")
    return devices


def variant_list() -> list[dict[str, Any]]:
    """Every SAM2 variant with its size and whether its checkpoint is on this machine."""
    out = []
    for v in models.VARIANTS.values():
        try:
            present = checkpoints.find_checkpoint(v) is not None
        except UserError:
            present = False
        out.append({"name": v.name, "label": v.label, "approx_mb": v.approx_mb, "present": present})
    return out


class InfoApi(ApiBase):
    """Static facts for the UI, and the `--view` masks."""

    @exposed
    def app_info(self) -> dict[str, Any]:
        """Static facts for the UI: version, mode, palette, model variants, defaults."""
        return {
            "version": __version__,
            "mode": self._mode,
            "palette": list(palette.PALETTE_HEX),
            "variants": variant_list(),
            "default_variant": checkpoints.preferred_variant(),
            "mask_modes": list(MASK_MODES),
            "devices": device_choices(),
            "candidate_defaults": candidates.CandidateParams().to_dict(),
            "view": self._view_items(),
            "data_dir": str(paths.data_dir()),
        }

    def _view_items(self) -> list[dict[str, Any]] | None:
        """`--view` masks resolved to project/pk/kind (registering the project if needed)."""
        if not self._view_paths:
            return None
        items = []
        for path in self._view_paths:
            try:
                project, pk, kind = viewer.find_mask_context(path)
                entry = registry.register(project.spec_path)  # idempotent: keeps its id
                pid = str(entry["id"])
                frame = project.frame(pk)
                items.append(
                    {
                        "path": str(path),
                        "project_id": pid,
                        "pk": pk,
                        "kind": kind,
                        "group_key": str(frame.group_key),
                        "image_url": media.image_url(pid, pk),
                        "mask_url": media.mask_url(pid, kind, pk, Path(path)),
                    }
                )
            except UserError as exc:
                items.append({"path": str(path), "error": str(exc)})
        return items
