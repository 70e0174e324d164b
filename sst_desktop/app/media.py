"""The services behind the JS API and the server: registered projects by id, their frames' image
and mask files, URLs of those files, and coloured mask PNGs.

The server never takes a file path from a URL: it resolves (project id, primary key) here.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from sst_desktop.app.access import policy
from sst_desktop.data import masks, palette, registry
from sst_desktop.data.project import Frame, Group, Project
from sst_desktop.errors import UserError

MASK_KINDS = ("ref", "pred")
OUTLINE_WIDTH = 2  # pixels of the contrasting edge drawn on grid tiles


class ProjectStore:
    """Registered projects by id, each opened once (its CSV read once) and shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Project] = {}

    def entries(self) -> list[dict[str, Any]]:
        """The registry's entries (see `registry.list_projects`)."""
        return registry.list_projects()

    def entry(self, project_id: Any) -> dict[str, Any]:
        """The registry entry of `project_id`, or a UserError telling where to go instead."""
        for entry in self.entries():
            if entry["id"] == str(project_id):
                return entry
        raise UserError(
            f"Project {project_id!r} is not in the project list (deleted or forgotten); "
            "go back to Projects and open or re-create it."
        )

    def project(self, project_id: Any) -> Project:
        """The open Project of a registered id (opened once, then cached)."""
        project_id = str(project_id)
        with self._lock:
            project = self._open.get(project_id)
        if project is not None:
            return project
        project = Project.open(self.entry(project_id)["spec_path"])
        with self._lock:
            return self._open.setdefault(project_id, project)

    def forget(self, project_id: Any) -> None:
        """Drop the open copy of a project (deleted, re-created or its spec changed on disk)."""
        with self._lock:
            self._open.pop(str(project_id), None)

    def frame(self, project_id: Any, pk: Any) -> Frame:
        """A frame of a registered project, or a UserError naming the key."""
        project = self.project(project_id)
        try:
            return project.frame(str(pk))
        except KeyError:
            raise UserError(
                f"Project {project_id!r} has no image with primary key {pk!r}."
            ) from None

    def group(self, project_id: Any, group_key: Any) -> Group:
        """A group of a registered project, or a UserError naming the key."""
        try:
            return self.project(project_id).group(str(group_key))
        except KeyError:
            raise UserError(
                f"Group {group_key!r} is not in this project (its CSV changed?)."
            ) from None

    def image_path(self, project_id: Any, pk: Any) -> Path:
        """The image file of a frame of a registered project, if the path rule lets the app open it."""
        frame = self.frame(project_id, pk)
        images_root = self.project(project_id).spec.images_root
        return policy().check_image(frame.image_path, images_root=images_root, pk=frame.pk)

    def mask_path(self, project_id: Any, kind: str, pk: Any) -> Path:
        """The `ref` or `pred` mask path of a frame of a registered project (it may not exist)."""
        frame = self.frame(project_id, pk)
        project = self.project(project_id)
        if kind == "ref":
            return Path(project.ref_mask_path(frame.pk))
        if kind == "pred":
            return Path(project.pred_mask_path(frame.pk))
        raise UserError(f"Mask kind must be 'ref' or 'pred', got {kind!r}.")


# ---------------------------------------------------------------------- URLs the UI fetches
def _q(text: Any) -> str:
    return quote(str(text), safe="")


def image_url(project_id: Any, pk: Any) -> str:
    """URL of a frame's image (a JPEG preview)."""
    return f"/image/{_q(project_id)}/{_q(pk)}"


def thumb_url(project_id: Any, pk: Any) -> str:
    """URL of a frame's grid thumbnail."""
    return f"/thumb/{_q(project_id)}/{_q(pk)}"


def mask_url(project_id: Any, kind: str, pk: Any, path: Path) -> str | None:
    """Coloured mask URL, versioned by the file's mtime so a rewritten mask is refetched; None
    when the mask does not exist."""
    try:
        version = path.stat().st_mtime_ns
    except OSError:
        return None
    return f"/mask/{_q(project_id)}/{kind}/{_q(pk)}.png?color=1&v={version:x}"


def working_mask_url(project_id: Any, pk: Any, index: int, nonce: str) -> str:
    """URL of one working mask of a labelling session (the nonce changes with the session)."""
    return f"/candidate/{_q(project_id)}/{_q(pk)}/{index}.png?v={nonce}"


# ---------------------------------------------------------------------- PNG rendering
def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an array (fast compression: these are served, not archived)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def colored_mask_png(
    path: Path,
    max_side: int = 0,
    outline: bool = False,
    expected_size: tuple[int, int] | None = None,
) -> bytes:
    """An ID mask file as a palette-coloured RGBA PNG, scaled down to `max_side` (0 = full size),
    optionally with a contrasting outline (the grid's tiles). With `expected_size` (its image's
    width, height) a mask of another size is refused from its header, before decoding."""
    ids = masks.shrink_to_fit(masks.read_mask(path, expected_size=expected_size), max_side)
    rgba = palette.colorize(ids)
    if outline:
        palette.draw_contrast_outline(rgba, ids, width=OUTLINE_WIDTH)
    return encode_png(rgba)
