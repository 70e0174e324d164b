"""Tests for the shipped sample dataset and its generator."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sst_desktop.data import images, masks, sample


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with open(sample.sample_csv_path(), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def image_path(row: dict):
    rel = sample.SAMPLE_CONFIG["img_path"].format(**row)
    return sample.sample_image_root() / rel


def test_csv_has_two_groups_of_six_with_unique_keys(rows):
    assert list(rows[0]) == sample.CSV_COLUMNS
    keys = [r[sample.SAMPLE_CONFIG["primary_key"]] for r in rows]
    assert len(keys) == len(set(keys)) == 12
    groups = Counter(tuple(r[c] for c in sample.SAMPLE_CONFIG["group_by"]) for r in rows)
    assert sorted(groups.values()) == [6, 6]
    # Groups interleave in the CSV, so "CSV order within a group" is a real property to keep.
    species = [r["Species"] for r in rows]
    assert species != sorted(species) and species != sorted(species, reverse=True)


def test_every_image_resolves_loads_and_has_a_matching_gt_mask(rows):
    sizes = set()
    for row in rows:
        path = image_path(row)
        assert path.is_file(), path
        size = images.image_size(path)
        assert images.load_image(path).size == size
        sizes.add(size)
        gt = masks.read_mask(
            sample.sample_gt_mask_dir() / f"{row['Image_name']}.png", expected_size=size
        )
        expected_ids = sorted(sample.GT_IDS[row["Species"]].values())
        assert masks.object_ids(gt) == expected_ids
        # The specimen covers a sensible part of the picture.
        assert 0.03 < (gt > 0).mean() < 0.6
    assert {(640, 480), (800, 600), (480, 640)} <= sizes


def test_one_image_is_stored_sideways_with_exif_rotation(rows):
    rotated = []
    for row in rows:
        path = image_path(row)
        with Image.open(path) as im:
            orientation = im.getexif().get(images.EXIF_ORIENTATION_TAG, 1)
            stored_size = im.size
        if orientation != 1:
            rotated.append(row["Image_name"])
            assert orientation == 6
            assert images.image_size(path) == stored_size[::-1]
    assert rotated == ["CA_0003"]


def test_rotated_image_displays_upright(rows):
    # The beetle's head (mask ID 3) must be above its elytra (ID 1) once EXIF is applied.
    row = next(r for r in rows if r["Image_name"] == "CA_0003")
    path = image_path(row)
    pixels = images.load_image_array(path)
    gt = masks.read_mask(sample.sample_gt_mask_dir() / "CA_0003.png")
    assert pixels.shape[:2] == gt.shape == (640, 480)
    head_y = np.nonzero(gt == 3)[0].mean()
    elytra_y = np.nonzero(gt == 1)[0].mean()
    assert head_y < elytra_y
    # And the picture agrees with the mask: elytra pixels are green, background is light.
    elytra_rgb = pixels[gt == 1].mean(axis=0)
    assert elytra_rgb[1] > elytra_rgb[0] + 30 and elytra_rgb[1] > elytra_rgb[2] + 30
    assert pixels[5:40, 5:40].mean() > 200


def test_dataset_is_small():
    total = sum(
        p.stat().st_size
        for p in sample.sample_dir().rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert total < 600 * 1024


def test_sample_config_points_at_the_shipped_files():
    cfg = sample.sample_config()
    assert cfg["primary_key"] == "Image_name"
    assert cfg["img_path"] == "{Dataset}/{Image_name}.jpg"
    assert cfg["group_by"] == ["Species"]
    assert cfg["mask_mode"] in masks.MASK_MODES
    assert sample.sample_csv_path().is_file() and str(sample.sample_csv_path()) == cfg["csv"]
    assert (
        sample.sample_image_root().is_dir() and str(sample.sample_image_root()) == cfg["image_root"]
    )


def test_generator_reproduces_the_committed_dataset(tmp_path, rows):
    assert sample.main(["--out", str(tmp_path)]) == 0
    with open(tmp_path / sample.CSV_NAME, newline="", encoding="utf-8") as f:
        assert list(csv.DictReader(f)) == rows
    for row in rows:
        new_path = tmp_path / sample.IMAGES_DIR / row["Dataset"] / f"{row['Image_name']}.jpg"
        new = images.load_image_array(new_path).astype(int)
        old = images.load_image_array(image_path(row)).astype(int)
        assert new.shape == old.shape
        # Same drawing; only JPEG encoder differences between library versions are tolerated.
        assert np.abs(new - old).mean() < 2.0, row["Image_name"]
        new_gt = masks.read_mask(tmp_path / sample.GT_MASKS_DIR / f"{row['Image_name']}.png")
        old_gt = masks.read_mask(sample.sample_gt_mask_dir() / f"{row['Image_name']}.png")
        assert (new_gt != old_gt).mean() < 0.001
