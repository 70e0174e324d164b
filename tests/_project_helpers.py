"""Small generated datasets (CSV + tiny images) for the table, spec, project and registry tests."""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path

from PIL import Image

# (pk, Dataset, View, Image_name): two datasets, one row with an empty Dataset.
ROWS = [
    ("b1", "beetles", "dorsal", "img_01"),
    ("b2", "beetles", "dorsal", "img_02"),
    ("m1", "moths", "dorsal", "img_03"),
    ("b3", "beetles", "lateral", "img_04"),
    ("m2", "moths", "dorsal", "img_05"),
    ("x1", "", "dorsal", "img_06"),
]
COLUMNS = ["pk", "Dataset", "View", "Image_name"]
TEMPLATE = "{Dataset}/{Image_name}.jpg"


def write_csv(path: Path, rows: list[tuple[str, ...]], columns: list[str] = COLUMNS) -> Path:
    """Write a UTF-8 CSV with a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def make_dataset(tmp_path: Path, rows: list[tuple[str, ...]] = ROWS) -> tuple[Path, Path]:
    """(csv_path, image_root) with one small JPEG per row at {Dataset}/{Image_name}.jpg."""
    image_root = tmp_path / "images"
    for i, (_, dataset, _, name) in enumerate(rows):
        folder = image_root / dataset if dataset else image_root
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24 + i, 16), color=(10 * i, 50, 90)).save(folder / f"{name}.jpg")
    return write_csv(tmp_path / "meta.csv", rows), image_root


def hold_file_removal(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the registry's removal of a project's subfolders wait: (removal started, let it go on)."""
    from sst_desktop.data import registry

    started, go_on = threading.Event(), threading.Event()
    real_rmtree = shutil.rmtree

    def held_rmtree(path, *args, **kwargs):
        started.set()
        go_on.wait(timeout=120)  # a guard against a hung test, not a measurement
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(registry.shutil, "rmtree", held_rmtree)
    return started, go_on
