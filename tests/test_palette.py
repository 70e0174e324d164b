"""Tests for the fixed ID palette, colorize and overlay."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from sst_desktop.data import palette
from sst_desktop.errors import MaskError


def test_palette_is_fixed_and_distinct():
    assert len(palette.PALETTE_HEX) == 256
    assert all(re.fullmatch(r"#[0-9a-f]{6}", h) for h in palette.PALETTE_HEX)
    # IDs 1..255 all differ, so no two objects of a mask share a colour.
    assert len(set(palette.PALETTE_HEX[1:])) == 255
    # Colour-blind-friendly first: the Okabe-Ito colours, in order.
    assert palette.PALETTE_HEX[1:5] == ["#e69f00", "#56b4e9", "#009e73", "#f0e442"]
    assert palette.id_color(1) == (0xE6, 0x9F, 0x00)
    assert palette.id_color(8) == (0xCC, 0x66, 0x77)  # Paul Tol muted starts at 8
    for i in (0, 17, 100, 255):
        assert "#{:02x}{:02x}{:02x}".format(*palette.id_color(i)) == palette.PALETTE_HEX[i]
    with pytest.raises(ValueError):
        palette.id_color(256)


def test_generated_colours_are_visible_and_not_too_close():
    rgb = np.array(palette.PALETTE[1:], dtype=float)
    # None is near-black or near-white (they would vanish on dark or light specimens).
    assert rgb.max(axis=1).min() >= 110
    assert rgb[16:].max(axis=1).min() >= 150  # the generated part is bright
    assert rgb.min(axis=1).max() < 230
    # Consecutive IDs (the most common neighbours in a mask) are clearly different.
    steps = np.abs(np.diff(rgb, axis=0)).sum(axis=1)
    assert steps.min() > 60


def test_colorize_maps_ids_to_rgba_with_transparent_background():
    mask = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    rgba = palette.colorize(mask)
    assert rgba.shape == (2, 2, 4) and rgba.dtype == np.uint8
    assert rgba[0, 0, 3] == 0
    assert tuple(rgba[0, 1]) == (*palette.id_color(1), 255)
    assert tuple(rgba[1, 0]) == (*palette.id_color(2), 255)
    assert tuple(rgba[1, 1]) == (*palette.id_color(255), 255)


def test_overlay_tints_objects_and_keeps_background():
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:25, 5:20] = 1
    mask[5:25, 20:35] = 2

    out = palette.overlay(image, mask, alpha=0.5, outline=False)
    assert out.mode == "RGB" and out.size == (40, 30)
    arr = np.asarray(out).astype(int)
    assert arr[0, 0].tolist() == [100, 100, 100]
    expected1 = [round(100 * 0.5 + c * 0.5) for c in palette.id_color(1)]
    assert np.abs(arr[15, 10] - expected1).max() <= 1
    expected2 = [round(100 * 0.5 + c * 0.5) for c in palette.id_color(2)]
    assert np.abs(arr[15, 28] - expected2).max() <= 1

    outlined = np.asarray(palette.overlay(image, mask, alpha=0.5, outline=True))
    # Border pixels of each object get the full colour, interior stays tinted, outside untouched.
    assert tuple(outlined[5, 10]) == palette.id_color(1)
    assert tuple(outlined[15, 19]) == palette.id_color(1)
    assert tuple(outlined[15, 20]) == palette.id_color(2)
    assert np.abs(outlined[15, 10].astype(int) - expected1).max() <= 1
    assert outlined[4, 10].tolist() == [100, 100, 100]


def test_overlay_accepts_arrays_and_checks_size():
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:4, 2:4] = 3
    assert palette.overlay(image, mask, alpha=1.0, outline=False).getpixel(
        (2, 2)
    ) == palette.id_color(3)
    with pytest.raises(MaskError, match=r"Mask is 10x12 but the image is 12x10"):
        palette.overlay(image, mask.T)


def test_outline_thickness_grows_with_image_size():
    image = Image.new("RGB", (800, 600), (100, 100, 100))  # 800 px side: 2 px outline
    mask = np.zeros((600, 800), dtype=np.uint8)
    mask[100:300, 200:400] = 5
    out = np.asarray(palette.overlay(image, mask, alpha=0.5))
    full = palette.id_color(5)
    assert tuple(out[100, 250]) == full and tuple(out[101, 250]) == full
    assert tuple(out[102, 250]) != full
    assert tuple(out[150, 398]) == full and tuple(out[150, 397]) != full
    assert out[99, 250].tolist() == [100, 100, 100]
    # An empty mask leaves the image as it is.
    blank = palette.overlay(image, np.zeros((600, 800), dtype=np.uint8))
    assert np.array_equal(np.asarray(blank), np.asarray(image))
