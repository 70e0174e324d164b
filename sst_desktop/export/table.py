"""A CSV table per image and part: area, bounding box, centroid and review flags."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop import fileio
from sst_desktop.data.labels import part_name
from sst_desktop.data.review import latest_flags
from sst_desktop.errors import UserError
from sst_desktop.export.items import ExportItem, ExportResult, read_item_mask, relative_image_path

COLUMNS = [
    "pk",
    "group",
    "mask",
    "stale",
    "image",
    "width",
    "height",
    "part_id",
    "part_name",
    "area_px",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "centroid_x",
    "centroid_y",
    "flags",
]


def part_stats(mask: np.ndarray) -> dict[int, dict[str, Any]]:
    """Area, bbox (x, y, w, h) and centroid (mean pixel index) of every part of an ID mask."""
    out = {}
    for part in (int(v) for v in np.unique(mask) if v != 0):
        ys, xs = np.nonzero(mask == part)
        out[part] = {
            "area_px": int(xs.size),
            "bbox_x": int(xs.min()),
            "bbox_y": int(ys.min()),
            "bbox_w": int(xs.max() - xs.min() + 1),
            "bbox_h": int(ys.max() - ys.min() + 1),
            "centroid_x": round(float(xs.mean()), 3),
            "centroid_y": round(float(ys.mean()), 3),
        }
    return out


def export_csv(project: Any, items: list[ExportItem], out: Path, on_progress=None) -> ExportResult:
    """Write one row per image and part (an image with an empty mask gets one row, part blank)."""
    if out.is_dir():
        raise UserError(
            f"--out {out} is a folder: give the CSV file to write, e.g. {out}/parts.csv"
        )
    labels = project.spec.labels
    flags = latest_flags(project.root)
    result = ExportResult(fmt="csv", out=str(out))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for index, item in enumerate(items):
        if on_progress is not None:
            on_progress(index, len(items))
        try:
            mask, (width, height) = read_item_mask(item)
        except UserError as exc:
            result.errors.append((item.pk, str(exc)))
            continue
        base = {
            "pk": item.pk,
            "group": item.group_label,
            "mask": item.source,
            "stale": "yes" if item.stale else "",
            "image": relative_image_path(project, item),
            "width": width,
            "height": height,
            # A reference was drawn by a person: review flags belong to predictions only.
            "flags": "; ".join(flags.get(item.pk, [])) if item.source == "pred" else "",
        }
        stats = part_stats(mask)
        for part, values in stats.items():
            writer.writerow(
                {**base, "part_id": part, "part_name": part_name(labels, part), **values}
            )
        if not stats:
            writer.writerow(base)
        result.count(item, len(stats))
    if on_progress is not None:
        on_progress(len(items), len(items))
    fileio.atomic_write_text(out, buf.getvalue())
    result.files = [str(out)]
    return result
