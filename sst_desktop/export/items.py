"""Which masks an export holds, and the shared bookkeeping of one export."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop.data.images import image_size
from sst_desktop.data.mask_files import mask_names
from sst_desktop.data.mask_state import MaskScan, group_state, scope_of
from sst_desktop.data.masks import read_mask
from sst_desktop.data.project import mask_file_name
from sst_desktop.errors import UserError

MASK_CHOICES = ("pred", "ref", "all")


@dataclass(frozen=True)
class ExportItem:
    """One image and the mask exported for it."""

    pk: str
    group_label: str
    image_path: Path
    mask_path: Path
    source: str  # "ref" (a labelled reference) or "pred" (a prediction)
    stale: bool = False  # a prediction older than the newest reference it was made from

    @property
    def stem(self) -> str:
        """A file-name-safe stem (the mask file's name without .png)."""
        return mask_file_name(self.pk)[: -len(".png")]


@dataclass
class ExportResult:
    """What an export wrote and what it had to leave out."""

    fmt: str
    out: str
    images: int = 0
    # One per image and part with pixels, in every format: a COCO annotation, the parts of a
    # YOLO label file, a CSV row, a part in a segmentation-folder mask.
    objects: int = 0
    polygons: int | None = None  # YOLO only: its objects may take several regions each
    stale: list[str] = field(default_factory=list)  # pks of stale predictions exported
    files: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (pk, reason)

    def lines(self) -> list[str]:
        """The report printed after an export."""
        out = [f"error: {pk}: {reason}" for pk, reason in self.errors]
        polygons = f" in {self.polygons} polygon(s)" if self.polygons is not None else ""
        stale = ""
        if self.stale:
            stale = (
                f"; {len(self.stale)} of the images are stale predictions (older than a "
                "reference of their group, marked stale): run their groups again to update them"
            )
        left_out = f"; {len(self.errors)} image(s) left out" if self.errors else ""
        out.append(
            f"Exported {self.images} image(s), {self.objects} object(s) (one per image and part)"
            f"{polygons} as {self.fmt} to {self.out}{stale}{left_out}"
        )
        return out

    def count(self, item: ExportItem, parts: int) -> None:
        """Book one exported image with `parts` objects."""
        self.images += 1
        self.objects += parts
        if item.stale:
            self.stale.append(item.pk)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the app's export job result)."""
        return {
            "format": self.fmt,
            "out": self.out,
            "images": self.images,
            "objects": self.objects,
            "polygons": self.polygons,
            "stale": list(self.stale),
            "errors": [{"pk": pk, "reason": r} for pk, r in self.errors],
            "line": self.lines()[-1],
        }


def collect_items(project: Any, masks: str = "all") -> list[ExportItem]:
    """The frames to export in project order: `pred`, `ref`, or `all` (a reference where there is
    one, else the prediction)."""
    if masks not in MASK_CHOICES:
        raise UserError(f"--masks is {masks!r}: use one of {', '.join(MASK_CHOICES)}")
    spec = project.spec
    refs = mask_names(Path(spec.ref_masks_dir)) if masks in ("ref", "all") else set()
    preds = mask_names(Path(spec.pred_masks_dir)) if masks in ("pred", "all") else set()
    # The same rule as the app's counts: one scan of both folders, staleness per group.
    scan, scope = MaskScan.of(project), scope_of(project)
    items = []
    for group in project.groups():
        stale = set(group_state(group.frames, scan, scope).stale)
        for frame in group.frames:
            name = mask_file_name(frame.pk)
            if name in refs:
                path, source = Path(spec.ref_masks_dir) / name, "ref"
            elif name in preds:
                path, source = Path(spec.pred_masks_dir) / name, "pred"
            else:
                continue
            items.append(
                ExportItem(
                    pk=str(frame.pk),
                    group_label=str(group.label),
                    image_path=frame.image_path,
                    mask_path=path,
                    source=source,
                    stale=source == "pred" and str(frame.pk) in stale,
                )
            )
    return items


def read_item_mask(item: ExportItem) -> tuple[np.ndarray, tuple[int, int]]:
    """The item's ID mask, checked against its image's post-EXIF (width, height)."""
    size = image_size(item.image_path)
    return read_mask(item.mask_path, expected_size=size), size


def relative_image_path(project: Any, item: ExportItem) -> str:
    """The image path relative to the image root (POSIX), or absolute when outside it."""
    root = Path(project.spec.images_root)
    try:
        return (
            Path(os.path.relpath(item.image_path, root)).as_posix()
            if _inside(item.image_path, root)
            else str(item.image_path)
        )
    except ValueError:  # another drive on Windows
        return str(item.image_path)


def _inside(path: Path, base: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(base))
    except ValueError:
        return False
    return True


def part_ids(labels: dict[int, str], found: set[int]) -> list[int]:
    """Every part ID: the named ones and any other found in the masks, sorted."""
    return sorted(set(labels) | set(found))
