"""An image-segmentation folder, the layout of the original SST-GUI's converter:
`images/training/{stem}.jpg`, `annotations/training/{stem}.png` and `labels.csv`."""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sst_desktop import fileio
from sst_desktop.data.images import load_image  # EXIF orientation applied
from sst_desktop.data.labels import describe_ids
from sst_desktop.data.masks import read_mask, write_mask
from sst_desktop.errors import UserError
from sst_desktop.export.items import ExportItem, ExportResult

SPLIT = "training"
JPEG_QUALITY = 95


def shortest_side_size(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is `shortest` (the longer one rounded down)."""
    width, height = size
    if width < height:
        return shortest, int(height * shortest / width)
    return int(width * shortest / height), shortest


def _convert(item: ExportItem, out: Path, shortest: int) -> list[int]:
    """Write one resized image (LANCZOS) and mask (NEAREST); return the part IDs in the mask."""
    image = load_image(item.image_path).convert("RGB")
    mask = read_mask(item.mask_path, expected_size=image.size)
    size = shortest_side_size(image.size, shortest)
    resized = image.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    resized.save(buf, format="JPEG", quality=JPEG_QUALITY)
    fileio.atomic_write_bytes(out / "images" / SPLIT / f"{item.stem}.jpg", buf.getvalue())
    small = Image.fromarray(mask, mode="L").resize(size, Image.Resampling.NEAREST)
    write_mask(out / "annotations" / SPLIT / f"{item.stem}.png", np.asarray(small))
    return [int(v) for v in np.unique(mask) if v != 0]


def export_segfolder(
    project: Any, items: list[ExportItem], out: Path, shortest_side: int = 1024, on_progress=None
) -> ExportResult:
    """Write the folder; images are converted on a thread pool (PIL releases the GIL)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: the segfolder export writes a folder")
    spec = project.spec
    result = ExportResult(fmt="segfolder", out=str(out))
    rows: list[dict[str, Any] | None] = [None] * len(items)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sst-export") as pool:
        futures = [pool.submit(_convert, item, out, shortest_side) for item in items]
        for index, (item, future) in enumerate(zip(items, futures, strict=True)):
            try:
                ids = future.result()
            except UserError as exc:
                result.errors.append((item.pk, str(exc)))
                continue
            finally:
                if on_progress is not None:
                    on_progress(index + 1, len(items))
            values = project.row_values(item.pk)
            rows[index] = {
                "stem": item.stem,
                "pk": item.pk,
                **{column: values.get(column, "") for column in spec.group_by},
                "mask": item.source,
                "stale": "yes" if item.stale else "",
                "parts": describe_ids(spec.labels, ids),
            }
            result.count(item, len(ids))
    buf = io.StringIO()
    fields = ["stem", "pk", *spec.group_by, "mask", "stale", "parts"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r for r in rows if r is not None)
    fileio.atomic_write_text(out / "labels.csv", buf.getvalue())
    result.files = [str(out / "labels.csv")]
    return result
