"""Which references condition a group's images (`reference_scope`), loaded and encoded once.

- `group` (default, the SST paper): a group is predicted from its own references only; a group
  without any is skipped.
- `all` (the original SST-GUI since January 2026): every image of every group is predicted from
  every reference mask of the project, so groups without references of their own are predicted
  too. The shared set is loaded and encoded into SAM2's memory once per run, not per group.

Memory attention grows linearly with the number of references (and objects), so `all` is refused
above `max_shared_references()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sst_desktop.data.images import load_image_array
from sst_desktop.data.masks import apply_mask_mode, read_mask

# engine.propagation imports no torch at module level; called through the module so a test's
# stand-in for build_reference_memory() is the one used.
from sst_desktop.engine import propagation
from sst_desktop.errors import MaskError, UserError

# Each reference adds (image_size / 16)^2 memory tokens per object that every target attends to.
MAX_SHARED_REFERENCES = 64
MAX_SHARED_REFERENCES_ENV = "SST_DESKTOP_MAX_SHARED_REFERENCES"


def max_shared_references() -> int:
    """The limit on the shared reference set (`$SST_DESKTOP_MAX_SHARED_REFERENCES` overrides)."""
    text = os.environ.get(MAX_SHARED_REFERENCES_ENV, "").strip()
    if not text:
        return MAX_SHARED_REFERENCES
    try:
        value = int(text)
    except ValueError:
        raise UserError(
            f"{MAX_SHARED_REFERENCES_ENV}={text!r} is not a whole number: set it to e.g. 128 or "
            f"unset it (default {MAX_SHARED_REFERENCES})."
        ) from None
    return max(value, 1)


def check_shared_limit(count: int) -> None:
    """UserError when `count` shared references exceed the documented limit."""
    limit = max_shared_references()
    if count > limit:
        raise UserError(
            f"reference_scope 'all' would condition every image on {count} reference masks, more "
            f"than the limit of {limit} (memory attention grows with the number of references): "
            f"use reference_scope 'group', remove references, or raise "
            f"{MAX_SHARED_REFERENCES_ENV}."
        )


def load_reference(project: Any, frame: Any, mask_mode: str) -> tuple[Any, Any]:
    """Image array and mode-transformed ID mask of one reference; raises UserError if unusable."""
    image = load_image_array(frame.image_path)
    height, width = image.shape[:2]
    path = project.ref_mask_path(frame.pk)
    mask = read_mask(path, expected_size=(width, height))
    if not mask.any():
        raise MaskError(
            f"reference mask {path} is empty: label at least one object or delete the file"
        )
    return image, apply_mask_mode(mask, mask_mode, name=str(path))


@dataclass
class LoadedReferences:
    """References ready to encode: images (dropped once encoded), masks and primary keys."""

    images: list[Any] | None
    masks: list[Any]
    names: list[str]
    memory: Any = None  # the encoded reference memory, kept for the shared set
    error: Exception | None = None  # why encoding failed, so later groups report the same


class ReferenceSets:
    """The references of each group under a scope; the shared set is loaded and encoded once.

    `on_bad(pk, reason, group_key)` reports a reference that cannot be used (it is left out).
    """

    def __init__(
        self,
        project: Any,
        scope: str,
        on_bad: Callable[[str, str, str], None],
    ) -> None:
        self.project = project
        self.scope = scope
        self.on_bad = on_bad
        self.shared: list[Any] | None = None
        self._shared_loaded: LoadedReferences | None = None
        self._shared_tried = False
        if scope == "all":
            self.shared = project.all_reference_frames()
            check_shared_limit(len(self.shared))

    def frames_for(self, own: list[Any]) -> list[Any]:
        """The reference frames a group with references `own` is conditioned on."""
        return self.shared if self.shared is not None else own

    def load(self, own: list[Any], group_key: str) -> LoadedReferences | None:
        """Load a group's references (the shared set only the first time); None if none usable."""
        if self.shared is None:
            return self._load(own, group_key)
        if not self._shared_tried:
            self._shared_tried = True
            self._shared_loaded = self._load(self.shared, group_key)
        return self._shared_loaded

    def memory(self, handle: Any, loaded: LoadedReferences) -> Any:
        """SAM2 reference memory of `loaded`; built once for the shared set."""
        if loaded.memory is not None:
            return loaded.memory
        if loaded.error is not None:
            raise loaded.error  # the shared set failed to encode for an earlier group
        pairs = list(zip(loaded.images or [], loaded.masks, strict=True))
        try:
            memory = propagation.build_reference_memory(handle, pairs, names=loaded.names)
        except Exception as exc:
            loaded.error = exc
            raise
        finally:
            loaded.images = None  # the memory holds what is needed; free the full-size images
        if loaded is self._shared_loaded:
            loaded.memory = memory
        return memory

    def _load(self, frames: list[Any], group_key: str) -> LoadedReferences | None:
        mode = self.project.spec.mask_mode
        images, masks, names = [], [], []
        for frame in frames:
            try:
                image, mask = load_reference(self.project, frame, mode)
            except UserError as exc:
                self.on_bad(str(frame.pk), f"reference not used: {exc}", group_key)
                continue
            images.append(image)
            masks.append(mask)
            names.append(str(frame.pk))
        return LoadedReferences(images, masks, names) if names else None


def shared_set_report(project: Any, scope: str) -> tuple[list[Any] | None, list[str], str | None]:
    """For a dry run: the shared reference set (None under 'group'), lines naming it once, and
    the over-the-limit problem, if any."""
    if scope != "all":
        return None, [], None
    shared = project.all_reference_frames()
    pks = [str(f.pk) for f in shared]
    shown = ", ".join(pks[:10]) + (f" and {len(pks) - 10} more" if len(pks) > 10 else "")
    lines = [
        f"Reference scope 'all': every image of every group is predicted from the same "
        f"{len(pks)} reference mask(s)" + (f": {shown}" if pks else "")
    ]
    try:
        check_shared_limit(len(pks))
    except UserError as exc:
        return shared, lines, str(exc)
    return shared, lines, None
