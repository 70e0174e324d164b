"""Choosing files: native dialogs in the window, uploads in the browser."""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from typing import Any

from sst_desktop import fileio, paths
from sst_desktop.app.access import policy
from sst_desktop.app.base import ApiBase
from sst_desktop.app.exposed import exposed
from sst_desktop.errors import UserError

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
FILE_TYPES = {
    "csv": ("CSV files (*.csv)", "All files (*.*)"),
    "checkpoint": ("SAM2 checkpoints (*.pt;*.pth)", "All files (*.*)"),
}


def _first(chosen: Any) -> str | None:
    """The first path a native dialog returned (a tuple, a string or nothing)."""
    if not chosen:
        return None
    if isinstance(chosen, (list, tuple)):
        return str(chosen[0])
    return str(chosen)


class DialogsApi(ApiBase):
    """Native open-file and folder dialogs (window mode) and browser uploads."""

    def _require_window(self, what: str) -> Any:
        window = self._services.window
        if window is None:
            raise UserError(
                f"Cannot {what} with a dialog in the browser: upload the file, or type its path "
                "on the server."
            )
        return window

    @exposed
    def pick_file(self, kind: str = "csv") -> dict[str, Any]:
        """Native open-file dialog (window mode): a CSV or a SAM2 checkpoint."""
        window = self._require_window("choose a file")
        types = FILE_TYPES.get(kind)
        if types is None:
            raise UserError(f"pick_file kind must be 'csv' or 'checkpoint', got {kind!r}.")
        import webview  # lazy: only the window has dialogs, and Qt is loaded there already

        chosen = _first(window.create_file_dialog(webview.FileDialog.OPEN, file_types=types))
        if chosen:
            # The user picked it: API calls may now name it (a CSV: its folder, where the
            # images usually are and the default image root points).
            policy().allow(os.path.dirname(chosen) if kind == "csv" else chosen)
        return {"path": chosen}

    @exposed
    def pick_folder(self) -> dict[str, Any]:
        """Native folder dialog (window mode)."""
        window = self._require_window("choose a folder")
        import webview  # lazy: only the window has dialogs, and Qt is loaded there already

        chosen = _first(window.create_file_dialog(webview.FileDialog.FOLDER))
        if chosen:
            policy().allow(chosen)
        return {"path": chosen}

    @exposed
    def upload_file(self, name: str, data_base64: str) -> dict[str, Any]:
        """Save a browser upload (base64) under the data folder; returns its server path."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(str(name or "upload")))
        safe = safe.lstrip(".") or "upload"
        if "," in data_base64[:100] and data_base64.startswith("data:"):
            data_base64 = data_base64.split(",", 1)[1]  # a data: URL from FileReader
        if len(data_base64) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
            raise UserError(
                f"{name} is larger than {MAX_UPLOAD_BYTES // 2**20} MB; copy it to the server instead."
            )
        try:
            data = base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise UserError(f"Upload of {name} is damaged (not base64); try again.") from None
        dest = paths.data_dir() / "uploads" / uuid.uuid4().hex[:8] / safe
        fileio.atomic_write_bytes(dest, data)
        return {"path": str(dest)}
