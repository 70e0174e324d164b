"""Tests for the image loader: EXIF orientations, header sizes, bomb guard, bad files, thumbnails."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from sst_desktop import paths
from sst_desktop.data import images
from sst_desktop.errors import ImageError

# Stored pixels of a photo with a given EXIF orientation, derived from the EXIF table of where the
# stored 0th row and 0th column end up on screen (independent of Pillow's own mapping).
STORED_FROM_DISPLAY = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],  # 0th row top, 0th column right
    3: lambda d: d[::-1, ::-1],  # 0th row bottom, 0th column right
    4: lambda d: d[::-1, :],  # 0th row bottom, 0th column left
    5: lambda d: d.transpose(1, 0, 2),  # 0th row left, 0th column top
    6: lambda d: np.rot90(d, k=1),  # 0th row right, 0th column top
    7: lambda d: d[::-1, ::-1].transpose(1, 0, 2),  # 0th row right, 0th column bottom
    8: lambda d: np.rot90(d, k=-1),  # 0th row left, 0th column bottom
}

BLOCK_COLOURS = [
    (220, 30, 30),
    (30, 200, 40),
    (30, 60, 220),
    (240, 220, 40),
    (200, 40, 200),
    (20, 20, 20),
]


def display_pattern(width: int = 96, height: int = 64) -> np.ndarray:
    """A (H, W, 3) image of 2x3 flat colour blocks: every flip or rotation of it is distinct."""
    out = np.zeros((height, width, 3), dtype=np.uint8)
    bh, bw = height // 2, width // 3
    for r in range(2):
        for c in range(3):
            out[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = BLOCK_COLOURS[r * 3 + c]
    return out


def write_jpeg(path: Path, pixels: np.ndarray, orientation: int | None = None, quality=95) -> Path:
    im = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[images.EXIF_ORIENTATION_TAG] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, format="JPEG", quality=quality, **kwargs)
    return path


def block_means(arr: np.ndarray) -> np.ndarray:
    """Mean colour of each of the 2x3 blocks, read away from block borders."""
    h, w = arr.shape[:2]
    bh, bw = h // 2, w // 3
    means = []
    for r in range(2):
        for c in range(3):
            block = arr[r * bh + 4 : (r + 1) * bh - 4, c * bw + 4 : (c + 1) * bw - 4]
            means.append(block.reshape(-1, 3).mean(axis=0))
    return np.array(means)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_exif_orientations_load_upright(tmp_path, orientation):
    display = display_pattern()
    stored = STORED_FROM_DISPLAY[orientation](display)
    path = write_jpeg(tmp_path / f"o{orientation}.jpg", stored, orientation=orientation)

    loaded = images.load_image_array(path)

    assert loaded.shape == display.shape
    assert loaded.dtype == np.uint8
    assert np.abs(block_means(loaded) - block_means(display)).max() < 12
    assert images.image_size(path) == (96, 64)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_preview_and_thumbnail_follow_exif(tmp_path, orientation):
    display = display_pattern(480, 320)
    stored = STORED_FROM_DISPLAY[orientation](display)
    path = write_jpeg(tmp_path / f"o{orientation}.jpg", stored, orientation=orientation)

    preview = images.load_preview(path, max_side=120)
    assert preview.size == (120, 80)
    assert np.abs(block_means(np.asarray(preview)) - block_means(display)).max() < 15

    thumb = Image.open(io.BytesIO(images.thumbnail_bytes(path, max_side=60)))
    assert thumb.format == "JPEG"
    assert thumb.size == (60, 40)


def test_load_image_returns_usable_rgb_for_other_modes(tmp_path):
    grey16 = np.full((10, 12), 65535, dtype=np.uint16)
    grey16[:, :6] = 0
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    arr = images.load_image_array(tmp_path / "g16.png")
    assert arr.shape == (10, 12, 3)
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[0, 11].tolist() == [255, 255, 255]

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # left: opaque red, right: fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    arr = images.load_image_array(tmp_path / "a.png")
    assert arr[0, 0].tolist() == [255, 0, 0]
    assert arr[0, 7].tolist() == [255, 255, 255]

    Image.new("L", (5, 7), 128).save(tmp_path / "l.png")
    im = images.load_image(tmp_path / "l.png")
    assert im.mode == "RGB" and im.size == (5, 7)
    assert im.getpixel((0, 0)) == (128, 128, 128)


def test_png_exif_orientation_after_pixel_data_is_found(tmp_path):
    display = display_pattern()
    stored = STORED_FROM_DISPLAY[6](display)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, format="PNG")
    data = buf.getvalue()
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION_TAG] = 6
    payload = exif.tobytes()
    # Put an eXIf chunk just before IEND, i.e. after the pixel data, as the PNG spec allows.
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    iend = data.rindex(b"IEND") - 4
    path = tmp_path / "late_exif.png"
    path.write_bytes(data[:iend] + chunk + data[iend:])

    assert images.image_size(path) == (96, 64)
    loaded = images.load_image_array(path)
    assert loaded.shape == (64, 96, 3)
    assert np.abs(block_means(loaded) - block_means(display)).max() < 2


def test_image_size_reads_header_only(tmp_path):
    # A truncated JPEG still has a complete header: its size is known, its pixels are not.
    pixels = STORED_FROM_DISPLAY[8](display_pattern(960, 640))
    full = write_jpeg(tmp_path / "full.jpg", pixels, 8)
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: data.index(b"\xff\xda") + 200])  # header + start of the scan

    assert images.image_size(cut) == (960, 640)
    with pytest.raises(ImageError, match=r"cut\.jpg.*truncated"):
        images.load_image(cut)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"not found: .*nope\.jpg"):
        images.load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match=r"nope\.jpg"):
        images.image_size(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match=r"nope\.jpg"):
        images.thumbnail_bytes(tmp_path / "nope.jpg", 64)


def test_corrupt_and_non_image_files(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(ImageError, match=r"garbage\.jpg"):
        images.load_image(garbage)

    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match=r"notes\.png"):
        images.image_size(text)

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg"):
        images.load_preview(empty, 64)

    # A blank or folder-only image path (e.g. an empty CSV cell) says where to look.
    with pytest.raises(ImageError, match="folder, not an image file; check the image path"):
        images.load_image(tmp_path)


def test_truncated_png_and_broken_jpeg_header(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png"):
        images.load_image(cut)
    assert images.image_size(cut) == (200, 200)  # the header is intact; no pixels are decoded

    path = write_jpeg(tmp_path / "broken.jpg", display_pattern(256, 256))
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = b"\x00\x00\x00\x00"  # height and width 0
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        images.load_image(path)


def fake_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data behind it."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(fake_png_header(30000, 30000))  # 900 MP claimed
    with pytest.raises(ImageError, match=r"bomb\.png is too large \(900 MP\)"):
        images.load_image(bomb)
    with pytest.raises(ImageError, match=r"SST_DESKTOP_MAX_IMAGE_PIXELS"):
        images.image_size(bomb)
    with pytest.raises(ImageError, match="too large"):
        images.load_preview(bomb, 100)
    # Below Pillow's hard limit our own check reports the dimensions.
    bomb.write_bytes(fake_png_header(16000, 15000))
    with pytest.raises(ImageError, match=r"bomb\.png is too large \(16000x15000 = 240 MP\)"):
        images.load_image(bomb)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = write_jpeg(tmp_path / "small.jpg", display_pattern())  # 6144 pixels
    assert images.load_image(path).size == (96, 64)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "5000")
    assert images.max_image_pixels() == 5000
    with pytest.raises(ImageError, match=r"small\.jpg is too large"):
        images.load_image(path)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageError, match="SST_DESKTOP_MAX_IMAGE_PIXELS"):
        images.load_image(path)
    # Above Pillow's own hard limit (2 x 89.5 MP) our limit still decides.
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1e9")
    assert images.max_image_pixels() == 1_000_000_000
    assert images.image_size(path) == (96, 64)


def test_preview_uses_draft_mode_on_large_jpegs(tmp_path, monkeypatch):
    path = write_jpeg(tmp_path / "big.jpg", display_pattern(1600, 1200), quality=90)
    decoded_sizes = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy_draft(self, mode, size):
        result = real_draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy_draft)
    preview = images.load_preview(path, 200)
    assert preview.size == (200, 150)
    assert preview.mode == "RGB"
    # The JPEG was decoded at 1/8 scale, not at full size.
    assert decoded_sizes == [(200, 150)]
    # A size between DCT steps decodes at the next larger one (1/4 = 400x300), then resizes.
    decoded_sizes.clear()
    assert images.load_preview(path, 300).size == (300, 225)
    assert decoded_sizes == [(400, 300)]
    assert np.abs(block_means(np.asarray(preview)) - block_means(display_pattern())).max() < 15
    with pytest.raises(ValueError):
        images.load_preview(path, 0)


def test_thumbnails_are_cached_and_invalidated(tmp_path):
    path = write_jpeg(tmp_path / "t.jpg", display_pattern(300, 200))
    first = images.thumbnail_bytes(path, 100)
    cached = list((paths.cache_dir() / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1
    assert cached[0].read_bytes() == first
    assert images.thumbnail_bytes(path, 100) == first
    assert len(list((paths.cache_dir() / "thumbs").rglob("*.jpg"))) == 1

    # A different size and a changed file each get their own entry.
    assert Image.open(io.BytesIO(images.thumbnail_bytes(path, 50))).size == (50, 33)
    write_jpeg(path, display_pattern(200, 300))
    os.utime(path, ns=(1, 1_000_000_000_000))
    changed = Image.open(io.BytesIO(images.thumbnail_bytes(path, 100)))
    assert changed.size == (67, 100)
    assert len(list((paths.cache_dir() / "thumbs").rglob("*.jpg"))) == 3
    # No temp files are left behind by the atomic writes.
    assert not list((paths.cache_dir() / "thumbs").rglob("*.tmp"))


def test_png_xmp_orientation_is_honoured_consistently(tmp_path):
    from PIL import PngImagePlugin

    display = display_pattern()
    stored = STORED_FROM_DISPLAY[8](display)
    info = PngImagePlugin.PngInfo()
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    info.add_itxt("XML:com.adobe.xmp", xmp)
    path = tmp_path / "xmp.png"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, pnginfo=info)

    assert images.image_size(path) == (96, 64)
    loaded = images.load_image_array(path)
    assert np.abs(block_means(loaded) - block_means(display)).max() < 2
    # A plain PNG without any orientation keeps its size.
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "plain.png")
    assert images.image_size(tmp_path / "plain.png") == (64, 96)
