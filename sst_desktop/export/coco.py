"""COCO instance segmentation: one RLE annotation (pycocotools) per image and part."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop import fileio
from sst_desktop.data.labels import part_name
from sst_desktop.errors import UserError
from sst_desktop.export.items import (
    ExportItem,
    ExportResult,
    part_ids,
    read_item_mask,
    relative_image_path,
)


def encode_part(mask: np.ndarray, part: int) -> dict[str, Any]:
    """COCO RLE, area and bbox of one part of an ID mask."""
    from pycocotools import mask as mask_utils  # only exports need it

    rle = mask_utils.encode(np.asfortranarray((mask == part).astype(np.uint8)))
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle).tolist()]
    return {
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()},
        "area": area,
        "bbox": bbox,
    }


def export_coco(project: Any, items: list[ExportItem], out: Path, on_progress=None) -> ExportResult:
    """Write a COCO JSON file to `out`: images (post-EXIF size, path relative to the image root),
    annotations (category = part ID) and categories named after the parts."""
    if out.is_dir():
        raise UserError(
            f"--out {out} is a folder: give the JSON file to write, e.g. {out}/coco.json"
        )
    labels = project.spec.labels
    result = ExportResult(fmt="coco", out=str(out))
    images, annotations, found = [], [], set()
    for index, item in enumerate(items, start=1):
        if on_progress is not None:
            on_progress(index - 1, len(items))
        try:
            mask, (width, height) = read_item_mask(item)
        except UserError as exc:
            result.errors.append((item.pk, str(exc)))
            continue
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": relative_image_path(project, item),
                "width": width,
                "height": height,
                "sst_pk": item.pk,
                "sst_group": item.group_label,
                "sst_mask": item.source,  # "ref": a labelled reference, "pred": a prediction
                "sst_stale": item.stale,  # a prediction older than a reference of its group
            }
        )
        parts = [int(v) for v in np.unique(mask) if v != 0]
        result.count(item, len(parts))
        for part in parts:
            found.add(part)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": part,
                    **encode_part(mask, part),
                    "iscrowd": 0,
                }
            )
    if on_progress is not None:
        on_progress(len(items), len(items))
    data = {
        "info": {
            "description": f"{project.name}: SST Desktop masks",
            "date_created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "image_root": str(project.spec.images_root),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": p, "name": part_name(labels, p), "supercategory": "part"}
            for p in part_ids(labels, found)
        ],
    }
    fileio.atomic_write_text(out, json.dumps(data, ensure_ascii=False))
    result.files = [str(out)]
    return result
