"""A small real project on disk for runner/CLI/viewer tests: images, CSV, spec.json, references."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import TEST_IMAGE_SIZE, TEST_VARIANT
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# Default layout: group "a" with a reference and 4 targets of mixed sizes; group "b" without one.
DEFAULT_GROUPS = {
    "a": [(72, 56), (64, 64), (56, 80), (80, 48), (64, 56)],
    "b": [(64, 64), (48, 64)],
}


def make_image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A specimen-like picture: a light background with two coloured blobs."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.full((height, width, 3), 225, np.uint8) + rng.integers(
        0, 20, (height, width, 3)
    ).astype(np.uint8)
    for cx, cy, colour in ((0.33, 0.4, (150, 60, 30)), (0.66, 0.62, (40, 90, 160))):
        blob = ((xx - cx * width) / (0.18 * width)) ** 2 + (
            (yy - cy * height) / (0.22 * height)
        ) ** 2 <= 1
        img[blob] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def reference_mask(size: tuple[int, int], ids: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """An ID mask over the two blobs of `make_image` (IDs in left-to-right order)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), np.uint8)
    for object_id, (cx, cy) in zip(ids, ((0.33, 0.4), (0.66, 0.62)), strict=False):
        blob = ((xx - cx * width) / (0.18 * width)) ** 2 + (
            (yy - cy * height) / (0.22 * height)
        ) ** 2 <= 1
        mask[blob] = object_id
    return mask


def make_project(
    base: Path,
    checkpoint: Path,
    groups: dict[str, list[tuple[int, int]]] | None = None,
    references: dict[str, int] | None = None,
    mask_mode: str = "original",
) -> Path:
    """Write images, a CSV, spec.json and reference masks; return the spec path.

    Frames are named `<group><index>`; `references` maps a group to how many of its first frames
    get a reference mask (default: one in group "a", none in "b").
    """
    from sst_desktop.data.masks import write_mask

    groups = groups or DEFAULT_GROUPS
    references = {"a": 1} if references is None else references
    root = base / "proj"
    images = base / "images"
    rows = []
    for group, sizes in groups.items():
        for index, size in enumerate(sizes):
            pk = f"{group}{index}"
            make_image(images / f"{pk}.png", size, seed=len(rows))
            rows.append({"id": pk, "set": group, "file": f"{pk}.png"})
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "images.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "set", "file"])
        writer.writeheader()
        writer.writerows(rows)
    for group, count in references.items():
        for index in range(count):
            pk = f"{group}{index}"
            write_mask(root / "ref_masks" / f"{pk}.png", reference_mask(groups[group][index]))
    spec = {
        "version": 1,
        "name": "test project",
        "root": str(root),
        "csv": str(csv_path),
        "primary_key": "id",
        "img_path": "file",
        "image_root": str(images),
        "group_by": ["set"],
        "sam2": TEST_VARIANT,
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "image_size": TEST_IMAGE_SIZE,
        "mask_mode": mask_mode,
    }
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return spec_path


def image_path(spec_path: Path, pk: str) -> Path:
    """Where `make_project` put the image of `pk`."""
    return spec_path.parent.parent / "images" / f"{pk}.png"


def cli_env() -> dict[str, str]:
    """Environment for running `python -m sst_desktop` from the repository in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m sst_desktop ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "sst_desktop", *args],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
