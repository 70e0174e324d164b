"""YOLO segmentation labels: per image a .txt with one normalised polygon per connected region.

The format has no holes: a region's holes are joined to its outline by a zero-width cut between
their closest points, so a polygon filled as trainers fill it (OpenCV's fillPoly) leaves the hole
empty. Contours are traced with OpenCV (opencv-python-headless).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop import fileio
from sst_desktop.data.labels import part_name
from sst_desktop.errors import UserError
from sst_desktop.export.items import ExportItem, ExportResult, part_ids, read_item_mask

_CHUNK = 512  # hole points compared at once when looking for the shortest cut


def _bridge(outline: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`outline` with `hole` spliced in at their closest pair of points (a zero-width cut)."""
    best = (np.inf, 0, 0)
    for start in range(0, len(hole), _CHUNK):
        chunk = hole[start : start + _CHUNK].astype(np.int64)
        d = ((outline[None, :, :].astype(np.int64) - chunk[:, None, :]) ** 2).sum(-1)
        j, i = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[j, i] < best[0]:
            best = (d[j, i], int(i), start + int(j))
    _, i, j = best
    ring = np.concatenate([hole[j:], hole[: j + 1]])
    return np.concatenate([outline[: i + 1], ring, outline[i:]])


def part_polygons(binary: np.ndarray) -> list[np.ndarray]:
    """Polygons (N, 2) of x, y pixel coordinates, one per connected region, holes bridged in."""
    import cv2  # only exports need it

    contours, hierarchy = cv2.findContours(
        binary.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    out = []
    for index, contour in enumerate(contours):
        if links[index][3] != -1:
            continue  # a hole: handled with its outline
        polygon = contour[:, 0, :]
        child = links[index][2]
        while child != -1:
            polygon = _bridge(polygon, contours[child][:, 0, :])
            child = links[child][0]
        if len(polygon) >= 3:  # 1-2 pixel specks have no area as a polygon
            out.append(polygon)
    return out


def label_lines(mask: np.ndarray) -> list[tuple[int, str]]:
    """(part ID, "x1 y1 x2 y2 ...") per region of one ID mask, coordinates / width and height."""
    height, width = mask.shape
    lines = []
    for part in (int(v) for v in np.unique(mask) if v != 0):
        for polygon in part_polygons(mask == part):
            coords = polygon.astype(np.float64) / np.array([width, height])
            lines.append((part, " ".join(f"{v:.6f}" for v in np.clip(coords, 0.0, 1.0).ravel())))
    return lines


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def export_yolo(project: Any, items: list[ExportItem], out: Path, on_progress=None) -> ExportResult:
    """Write `out/images/` (copies), `out/labels/{stem}.txt` and `out/data.yaml`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: YOLO export writes a folder")
    labels = project.spec.labels
    result = ExportResult(fmt="yolo", out=str(out), polygons=0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    done: list[tuple[ExportItem, list[tuple[int, str]]]] = []
    for index, item in enumerate(items):
        if on_progress is not None:
            on_progress(index, len(items))
        try:
            mask, _ = read_item_mask(item)
        except UserError as exc:
            result.errors.append((item.pk, str(exc)))
            continue
        done.append((item, label_lines(mask)))
        # The original file (EXIF kept): trainers apply its orientation, as the polygons assume.
        shutil.copyfile(item.image_path, out / "images" / (item.stem + item.image_path.suffix))
    # Classes are 0..K-1 over every named or found part, known only once all masks are read.
    parts = part_ids(labels, {part for _, lines in done for part, _ in lines})
    classes = {p: i for i, p in enumerate(parts)}
    for item, lines in done:
        text = "".join(f"{classes[part]} {coords}\n" for part, coords in lines)
        fileio.atomic_write_text(out / "labels" / f"{item.stem}.txt", text)
        result.polygons += len(lines)
        result.count(item, len({part for part, _ in lines}))
    names = "\n".join(f"  {i}: {_yaml_str(part_name(labels, p))}" for p, i in classes.items())
    ids = "\n".join(f"#   class {i} = part ID {p}" for p, i in classes.items())
    # YOLO labels carry no attributes: the stale predictions' label files are listed here.
    stale = "".join(f"#   stale prediction: {item.stem}\n" for item, _ in done if item.stale)
    yaml = (
        f"# SST Desktop export of {project.name}: YOLO segmentation labels\n{ids}\n{stale}"
        f"path: {_yaml_str(str(out))}\ntrain: images\nval: images\n"
        f"names:\n{names or '  {}'}\n"
    )
    fileio.atomic_write_text(out / "data.yaml", yaml)
    if on_progress is not None:
        on_progress(len(items), len(items))
    result.files = [str(out / "data.yaml")]
    return result
