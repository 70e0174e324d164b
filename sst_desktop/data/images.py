"""The one image loader: EXIF-corrected RGB images, header-only sizes, previews and thumbnails.

Every size the app reports or writes is the size *after* EXIF rotation, because that is how
the image is displayed and how its masks are stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from sst_desktop import fileio, paths
from sst_desktop.errors import ImageError

# Default decompression-bomb guard: larger images are refused before they are decoded.
DEFAULT_MAX_IMAGE_PIXELS = 200_000_000
MAX_PIXELS_ENV = "SST_DESKTOP_MAX_IMAGE_PIXELS"

EXIF_ORIENTATION_TAG = 0x0112
# Orientations 5..8 swap width and height when displayed.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

THUMB_QUALITY = 85
# --fast-decode decodes a JPEG at half its size at most, and never below the model size. Worst
# mask agreement with the exact path on 12-MP photos (random weights): half size 99.58-99.64 % at
# model size 256 and 99.62 % at 1024; a quarter (256 px) 99.38 %, an eighth 98.98 %.
FAST_DECODE_MAX_REDUCTION = 2

# We raise our own ImageError above the limit, so Pillow's warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Truncated files must be reported, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def max_image_pixels() -> int:
    """The pixel-count limit: $SST_DESKTOP_MAX_IMAGE_PIXELS, else 200 MP."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if raw:
        try:
            value = int(float(raw))
        except ValueError:
            raise ImageError(
                f"{MAX_PIXELS_ENV}={raw!r} is not a number; set it to a pixel count such as 200000000"
            ) from None
        if value > 0:
            return value
    return DEFAULT_MAX_IMAGE_PIXELS


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open `path` fully decoded as an RGB image, rotated as its EXIF orientation says."""
    path = Path(path)
    with _open(path) as im:
        try:
            im.load()
            oriented = _exif_transpose(im)
            rgb = _to_rgb(oriented)
            rgb.load()
        except ImageError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error...
            raise _decode_error(path, exc) from exc
    return rgb


def load_image_array(path: str | os.PathLike) -> np.ndarray:
    """`load_image` as a (H, W, 3) uint8 array."""
    return np.asarray(load_image(path), dtype=np.uint8).copy()


@dataclass
class ModelInput:
    """A target already resized to the model's square input, with its displayed (post-EXIF) size."""

    resized: np.ndarray  # (S, S, 3) uint8 RGB
    height: int
    width: int


def load_model_input(path: str | os.PathLike, size: int, fast: bool = False) -> ModelInput:
    """Decode, EXIF-rotate and resize `path` to `size` x `size` in one go, without a full-size array.

    Exact (default): the same pixels as resizing `load_image_array(path)` with PIL's default
    filter, which is what upstream's frame loader does. `fast` lets libjpeg decode a JPEG at half
    its size (DCT scaling) when both halves still cover `size`, which costs about a third on a
    12-MP photo but is not pixel-identical.
    """
    path = Path(path)
    with _open(path) as im:
        try:
            full_w, full_h = im.size
            if fast and im.format == "JPEG":
                # libjpeg picks the smallest DCT scale that still covers the requested size.
                im.draft("RGB", _fast_decode_size(full_w, full_h, size))
            im.load()
            orientation = _exif_orientation(im)
            upright = im
            if orientation != 1:  # (exif_transpose would also copy an upright image: skipped)
                try:
                    upright = ImageOps.exif_transpose(im)
                except Exception:  # a malformed EXIF block is ignored, as in load_image
                    orientation = 1
            resized = _to_rgb(upright).resize((size, size))
        except ImageError:
            raise
        except Exception as exc:
            raise _decode_error(path, exc) from exc
    swapped = orientation in _SWAPPING_ORIENTATIONS
    height, width = (full_w, full_h) if swapped else (full_h, full_w)
    return ModelInput(resized=np.asarray(resized, dtype=np.uint8), height=height, width=width)


def _fast_decode_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The size `--fast-decode` asks libjpeg for: at most `FAST_DECODE_MAX_REDUCTION` times
    smaller than the photo on each side, never smaller than the model size.

    Pillow's draft picks the scale `min(width // asked_width, height // asked_height)`, so the
    halves are rounded down (a rounded-up half of an odd side would give no reduction at all).
    """
    reduction = FAST_DECODE_MAX_REDUCTION
    return max(size, width // reduction), max(size, height // reduction)


def _exif_orientation(im: Image.Image) -> int:
    """The orientation `ImageOps.exif_transpose` acts on (1 where it would leave the image as is)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block: exif_transpose is skipped (see _exif_transpose)
        return 1
    return value if value in range(2, 9) else 1


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Displayed (width, height) after EXIF rotation, read from the header without decoding."""
    path = Path(path)
    with _open(path) as im:
        width, height = im.size
        try:
            orientation = _orientation(im, path)
        except Exception:
            orientation = 1  # an unreadable EXIF block is ignored, as exif_transpose does
    if orientation in _SWAPPING_ORIENTATIONS:
        return height, width
    return width, height


def load_preview(path: str | os.PathLike, max_side: int) -> Image.Image:
    """RGB image scaled to fit `max_side`, using JPEG draft mode (DCT scaling) for speed."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    path = Path(path)
    with _open(path) as im:
        try:
            if im.format == "JPEG":
                # Draft picks the largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides at
                # least the requested size; libjpeg's scaled decode averages, so it stays sharp.
                scale = min(1.0, max_side / max(im.size))
                want = (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale))
                im.draft("RGB", want)
            im.load()
            oriented = _exif_transpose(im)
            rgb = _to_rgb(oriented)
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
            rgb.load()
        except ImageError:
            raise
        except Exception as exc:
            raise _decode_error(path, exc) from exc
    return rgb


def thumbnail_bytes(path: str | os.PathLike, max_side: int = 256) -> bytes:
    """JPEG thumbnail of `path` (fits `max_side`), cached under the cache folder."""
    path = Path(path)
    try:
        resolved = path.resolve()
        stat = resolved.stat()
    except FileNotFoundError:
        raise ImageError(f"Image not found: {path}; check the image root and image path") from None
    except OSError as exc:
        raise ImageError(f"Cannot read image {path}: {exc.strerror or exc}") from None
    cache_file = _thumb_cache_file(resolved, stat.st_mtime_ns, stat.st_size, max_side)
    try:
        return cache_file.read_bytes()
    except OSError:
        pass
    preview = load_preview(resolved, max_side)
    buf = io.BytesIO()
    preview.save(buf, format="JPEG", quality=THUMB_QUALITY)
    data = buf.getvalue()
    # A read-only or full cache must not stop the thumbnail from being shown.
    with contextlib.suppress(OSError):
        fileio.atomic_write_bytes(cache_file, data)
    return data


def _thumb_cache_file(resolved: Path, mtime_ns: int, size: int, max_side: int) -> Path:
    """Cache path for one (file, version, size) combination."""
    key = f"{resolved}\0{mtime_ns}\0{size}\0{max_side}".encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(key).hexdigest()[:32]
    return paths.cache_dir() / "thumbs" / digest[:2] / f"{digest}.jpg"


def _open(path: Path) -> Image.Image:
    """Image.open with the bomb guard and every failure turned into an ImageError."""
    limit = max_image_pixels()
    # Pillow refuses images above 2x its own limit; keep that above ours so ours decides.
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    special = fileio.special_file_kind(path)
    if special:
        raise ImageError(f"Image path {path} is {special}, not an image file: point it at a file")
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"Image not found: {path}; check the image root and image path") from None
    except IsADirectoryError:
        raise ImageError(
            f"Image path {path} is a folder, not an image file; check the image path column "
            "or template (a blank cell gives the image root itself) and the image root"
        ) from None
    except PermissionError:
        raise ImageError(f"Cannot read image {path}: permission denied") from None
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit fired first (over 2x its limit); its message has the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb_error(path, int(found.group(1)) if found else None, limit) from None
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"Cannot read image {path}: not a recognised image format (corrupt or not an image)"
        ) from None
    except Exception as exc:
        raise _decode_error(path, exc) from exc
    width, height = im.size
    if width * height > limit:
        im.close()
        raise _bomb_error(path, width * height, limit, (width, height))
    if width < 1 or height < 1:
        im.close()
        raise ImageError(f"Cannot read image {path}: it has no pixels ({width}x{height})")
    return im


def _bomb_error(
    path: Path, pixels: int | None, limit: int, size: tuple[int, int] | None = None
) -> ImageError:
    if size:
        dims = f" ({size[0]}x{size[1]} = {pixels / 1e6:.0f} MP)"
    else:
        dims = f" ({pixels / 1e6:.0f} MP)" if pixels else ""
    return ImageError(
        f"Image {path} is too large{dims}; the limit is {limit / 1e6:.0f} MP. Downscale it, or raise "
        f"the limit with the environment variable {MAX_PIXELS_ENV}"
    )


def _decode_error(path: Path, exc: BaseException) -> ImageError:
    reason = str(exc).strip() or type(exc).__name__
    if "truncated" in reason.lower():
        hint = "the file is truncated; copy it again from its source"
    else:
        hint = "the file is corrupt or not a supported image; re-export or copy it again"
    return ImageError(f"Cannot read image {path}: {reason} ({hint})")


def _orientation(im: Image.Image, path: Path) -> int:
    """EXIF orientation 1..8 (1 when absent or invalid), without decoding pixel data."""
    if im.format == "PNG" and "exif" not in im.info:
        # Pillow would decode the whole PNG to look for an eXIf chunk stored after the pixel data;
        # walk the chunk list instead. With info["exif"] set, getexif() reads no pixels and still
        # applies the XMP / "Raw profile" fallbacks that exif_transpose uses.
        late = _png_exif_chunk(path)
        if late:
            im.info["exif"] = late
        elif "Raw profile type exif" not in im.info:
            im.info["exif"] = b""
    exif = im.getexif()
    value = exif.get(EXIF_ORIENTATION_TAG, 1)
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _png_exif_chunk(path: Path) -> bytes | None:
    """Raw payload of a PNG's eXIf chunk, found by seeking past chunk data (no decompression)."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            length, ctype = struct.unpack(">I4s", header)
            if ctype == b"eXIf":
                data = f.read(length)
                return data if len(data) == length else None
            if ctype == b"IEND":
                return None
            f.seek(length + 4, io.SEEK_CUR)  # chunk data + CRC


def _exif_transpose(im: Image.Image) -> Image.Image:
    """ImageOps.exif_transpose, ignoring a malformed EXIF block rather than failing the image."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        return im.copy()  # a copy: the caller closes the file-backed original


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (16-bit and float greys are scaled, alpha on white)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16"):
            scaled = arr / 257.0  # 16-bit full range -> 8-bit full range
        else:
            top = float(arr.max()) if arr.size else 0.0
            scaled = arr * (255.0 / top) if top > 255 else arr
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")
