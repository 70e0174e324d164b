"""ID masks: 8-bit single-channel PNGs where a pixel is an object ID (0 = background, 1..255).

This is the format of the SST datasets and of the original SST-GUI (`ref_masks/{pk}.png`,
`pred_masks/{pk}.png`), always at the image's displayed (post-EXIF) size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from sst_desktop import fileio
from sst_desktop.data.images import max_image_pixels
from sst_desktop.errors import MaskError

MASK_MODES = ("original", "position", "binary")
QUADRANT_NAMES = {1: "top-left", 2: "top-right", 3: "bottom-left", 4: "bottom-right"}
MAX_ID = 255
# zlib level for predicted masks: level 1 encodes several times faster than Pillow's default (6);
# the files are larger (see the README's speed section) but hold the same pixels.
PRED_MASK_COMPRESS_LEVEL = 1
# Predicted masks go through libpng (OpenCV) with no row filter and zlib's run-length strategy:
# ID masks are long runs of one value, so this is 2-4x faster than Pillow at level 1 (which tries
# five filters on every row) and smaller than Pillow's default level 6 (README, speed section).
FAST_PNG_PARAMS = {
    "IMWRITE_PNG_COMPRESSION": PRED_MASK_COMPRESS_LEVEL,
    "IMWRITE_PNG_STRATEGY": "IMWRITE_PNG_STRATEGY_RLE",
    "IMWRITE_PNG_FILTER": "IMWRITE_PNG_FILTER_NONE",
}

# Pillow modes whose pixel values are IDs as they are.
_ID_MODES = ("L", "P", "1", "I;16", "I;16B", "I;16L", "I;16N", "I")


def read_mask(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an ID mask as a (H, W) uint8 array; `expected_size` is the image's (width, height)."""
    path = Path(path)
    special = fileio.special_file_kind(path)
    if special:
        raise MaskError(f"Mask {path} is {special}, not a PNG file: delete it")
    try:
        with Image.open(path) as im:
            _check_mask_header(path, im, expected_size)
            im.load()
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                raise MaskError(
                    f"Mask {path} is a colour ({mode}) image, not an ID mask; masks must be 8-bit "
                    "single-channel PNGs whose pixel values are object IDs (0 = background)"
                )
            if mode == "LA":
                im = im.getchannel("L")  # IDs in the grey band; the alpha band carries no IDs
            elif mode not in _ID_MODES:
                raise MaskError(
                    f"Mask {path} has unsupported pixel mode {mode}; save it as an 8-bit "
                    "single-channel PNG whose pixel values are object IDs"
                )
            # For "P" this gives the palette indices, which is how ID masks are stored as palette PNGs.
            array = np.array(im)
    except MaskError:
        raise
    except FileNotFoundError:
        raise MaskError(f"Mask not found: {path}") from None
    except Exception as exc:  # corrupt/truncated PNG, not an image at all, permission...
        reason = str(exc).strip() or type(exc).__name__
        raise MaskError(
            f"Cannot read mask {path}: {reason}; delete the file and label or predict it again"
        ) from None
    mask = to_id_mask(array, name=str(path))
    if expected_size is not None:
        width, height = mask.shape[1], mask.shape[0]
        exp_w, exp_h = int(expected_size[0]), int(expected_size[1])
        if (width, height) != (exp_w, exp_h):
            raise MaskError(
                f"Mask {path} is {width}x{height} but its image is {exp_w}x{exp_h} (width x height, "
                "after EXIF rotation); delete the mask and label or predict it again"
            )
    return mask


def _check_mask_header(path: Path, im: Image.Image, expected_size: tuple[int, int] | None) -> None:
    """Refuse a mask by its header before its pixels are decoded (a small file can hold a huge
    image): it must match its image's size, and stay under the image pixel limit."""
    width, height = im.size
    if expected_size is not None and (width, height) != tuple(int(v) for v in expected_size):
        exp_w, exp_h = int(expected_size[0]), int(expected_size[1])
        raise MaskError(
            f"Mask {path} is {width}x{height} but its image is {exp_w}x{exp_h} (width x height, "
            "after EXIF rotation); delete the mask and label or predict it again"
        )
    limit = max_image_pixels()
    if width * height > limit:
        raise MaskError(
            f"Mask {path} is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"{limit / 1e6:.0f} MP image limit; a mask has its image's size: delete it"
        )


def mask_file_problem(path: str | os.PathLike, expected_size: tuple[int, int]) -> str | None:
    """Why the file at `path` is no ID mask of `expected_size`, from its header only; None if it is."""
    path = Path(path)
    special = fileio.special_file_kind(path)
    if special:
        return f"it is {special}"
    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
    except Exception as exc:  # corrupt, not an image, gone
        return f"it cannot be read ({str(exc).strip() or type(exc).__name__})"
    if mode not in _ID_MODES and mode != "LA":
        return f"it is a {mode} image, not an ID mask"
    if tuple(size) != tuple(int(v) for v in expected_size):
        return f"it is {size[0]}x{size[1]}, its image {expected_size[0]}x{expected_size[1]}"
    return None


def write_mask(
    path: str | os.PathLike, mask: np.ndarray, compress_level: int | None = None
) -> Path:
    """Write `mask` atomically as an 8-bit "L" PNG (no palette); return the path.

    `compress_level` (0-9) trades file size for speed; None keeps Pillow's default (6).
    """
    staged = stage_mask(path, mask, compress_level=compress_level)
    staged.commit()
    return staged.path


def stage_mask(
    path: str | os.PathLike, mask: np.ndarray, compress_level: int | None = None
) -> fileio.StagedFile:
    """`write_mask` up to the final rename: the PNG is complete in a temp file beside `path`."""
    path = Path(path)
    ids = to_id_mask(mask, name=str(path))
    image = Image.fromarray(ids, mode="L")
    options = {} if compress_level is None else {"compress_level": int(compress_level)}
    return fileio.stage_write(path, lambda f: image.save(f, format="PNG", **options))


def stage_prediction(path: str | os.PathLike, mask: np.ndarray) -> fileio.StagedFile:
    """`stage_mask` with the fast encoder for predicted masks (same pixels, see FAST_PNG_PARAMS)."""
    path = Path(path)
    data = encode_png_fast(to_id_mask(mask, name=str(path)))
    return fileio.stage_write(path, lambda f: f.write(data))


def encode_png_fast(ids: np.ndarray) -> bytes:
    """An (H, W) uint8 mask as the bytes of an 8-bit greyscale PNG, encoded for speed."""
    import cv2  # only runs need it; keeps OpenCV out of the window's start-up

    params = []
    for key, value in FAST_PNG_PARAMS.items():
        params += [getattr(cv2, key), value if isinstance(value, int) else getattr(cv2, value)]
    if ids.size == 0:
        raise MaskError("Mask is empty (0 pixels); there is nothing to write")
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(ids), params)
    if not ok:
        raise MaskError(f"Mask of {ids.shape[1]}x{ids.shape[0]} could not be encoded as PNG")
    return buffer.tobytes()


def id_counts(mask: np.ndarray) -> list[int]:
    """Pixel count of every ID 0..255 in one pass (Pillow's histogram; no sort, unlike np.unique)."""
    ids = to_id_mask(mask)
    if ids.size == 0:
        return [0] * (MAX_ID + 1)
    return Image.fromarray(ids, mode="L").histogram()


def to_id_mask(array: np.ndarray, name: str | None = None) -> np.ndarray:
    """Validate and convert a 2-D array of object IDs to a contiguous (H, W) uint8 mask."""
    what = f"Mask {name}" if name else "Mask"
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise MaskError(f"{what} must be a 2-D array of object IDs, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise MaskError(f"{what} holds non-integer values; object IDs must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise MaskError(f"{what} has dtype {arr.dtype}; object IDs must be integers")
    if arr.size:
        low, high = arr.min(), arr.max()
        if low < 0 or high > MAX_ID:
            ids = np.unique(arr[arr != 0])
            if len(ids) > MAX_ID:
                raise MaskError(
                    f"{what} has {len(ids)} object IDs; an 8-bit mask holds at most {MAX_ID} "
                    "(IDs 1..255), so merge or drop objects"
                )
            raise MaskError(
                f"{what} has IDs outside 1..{MAX_ID} (min {low}, max {high}); renumber the "
                f"objects to 1..{MAX_ID}"
            )
    return arr.astype(np.uint8)


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down (never up) so the longer side is at most `max_side`; 0/None = as is."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def nearest_indices(source: int, target: int) -> np.ndarray:
    """For each of `target` output pixels, the source pixel under its centre (nearest neighbour)."""
    return ((np.arange(target) + 0.5) * source / target).astype(np.int64)


def resize_nearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """`mask` resampled to (width, height) by nearest pixel centre: IDs are never blended."""
    rows = nearest_indices(mask.shape[0], height)
    cols = nearest_indices(mask.shape[1], width)
    return mask[np.ix_(rows, cols)]


def shrink_to_fit(mask: np.ndarray, max_side: int | None) -> np.ndarray:
    """`mask` scaled down (nearest neighbour) to fit `max_side`; unchanged when it fits or 0/None."""
    height, width = mask.shape[:2]
    size = fit_size(width, height, max_side)
    return mask if size == (width, height) else resize_nearest(mask, *size)


def object_ids(mask: np.ndarray) -> list[int]:
    """Sorted non-zero IDs present in `mask`."""
    # Pillow's histogram of an 8-bit image is ~15x faster than np.bincount on big masks.
    counts = id_counts(mask)
    return [i for i in range(1, MAX_ID + 1) if counts[i]]


def object_centres(mask: np.ndarray) -> dict[int, tuple[float, float]]:
    """Bounding-box centre (x, y) of each object in pixel-index coordinates.

    The centre of an object spanning columns 45..54 is x = (45 + 54) / 2 = 49.5: the rule of the
    original SST-GUI, kept so that position-mode IDs agree with masks made there.
    """
    mask = to_id_mask(mask)
    result: dict[int, tuple[float, float]] = {}
    for oid in object_ids(mask):
        selected = mask == oid
        cols = np.flatnonzero(selected.any(axis=0))
        rows = np.flatnonzero(selected.any(axis=1))
        result[oid] = ((int(cols[0]) + int(cols[-1])) / 2, (int(rows[0]) + int(rows[-1])) / 2)
    return result


def apply_mask_mode(mask: np.ndarray, mode: str, name: str | None = None) -> np.ndarray:
    """Relabel an ID mask by mask mode: "original", "binary" or "position".

    - original: IDs kept.
    - binary: every non-zero pixel becomes 1.
    - position: each object (all pixels of one ID) gets the ID of its quadrant, 1 = top-left,
      2 = top-right, 3 = bottom-left, 4 = bottom-right, exactly as the original SST-GUI numbers
      them. An object's centre is its bounding-box centre in pixel-index coordinates
      (`object_centres`); it is compared with split lines at width / 2 and height / 2, or at the
      mean of the centres:
        * a single object: both axes split at the image centre;
        * 2 or 3 objects: an axis on which every centre lies strictly on one side of the image
          centre splits at the image centre (two masks in the bottom half become 3 and 4), any
          other axis at the mean of the centres;
        * 4 objects always split at the mean (the image centre would force a collision).
      Raises MaskError (the caller reports the frame and goes on) when two objects land in the same
      quadrant, a centre lies exactly on a split line, or there are more than 4 objects.
      An empty mask stays empty.

    `name` (a file or frame key) is put in error messages.
    """
    ids_mask = to_id_mask(mask, name=name)
    if mode == "original":
        return ids_mask.copy()
    if mode == "binary":
        return (ids_mask > 0).astype(np.uint8)
    if mode != "position":
        raise MaskError(f"Unknown mask mode {mode!r}; use one of {', '.join(MASK_MODES)}")
    return _position_relabel(ids_mask, name)


def _position_relabel(mask: np.ndarray, name: str | None) -> np.ndarray:
    what = f"{name}: " if name else ""
    ids = object_ids(mask)
    if not ids:
        return mask.copy()
    if len(ids) > 4:
        raise MaskError(
            f"{what}position mask mode needs at most 4 objects, found {len(ids)} (IDs "
            f"{', '.join(map(str, ids))}); use mask_mode 'original' for this dataset"
        )
    height, width = mask.shape
    centres = object_centres(mask)
    split_x = _split(ids, centres, axis=0, centre=width / 2)
    split_y = _split(ids, centres, axis=1, centre=height / 2)
    quadrant_of: dict[int, int] = {}
    for oid in ids:
        cx, cy = centres[oid]
        if _on_line(cx, split_x) or _on_line(cy, split_y):
            raise MaskError(
                f"{what}position mask mode cannot place object {oid}: its bounding-box centre "
                f"({cx:g}, {cy:g}) lies on the quadrant split line (x={split_x:g}, "
                f"y={split_y:g}); use mask_mode 'original' or relabel this frame"
            )
        quadrant_of[oid] = 1 + (cx > split_x) + 2 * (cy > split_y)
    taken: dict[int, int] = {}
    for oid in ids:
        quadrant = quadrant_of[oid]
        if quadrant in taken:
            raise MaskError(
                f"{what}position mask mode puts objects {taken[quadrant]} and {oid} both in the "
                f"{QUADRANT_NAMES[quadrant]} quadrant; use mask_mode 'original' or relabel this frame"
            )
        taken[quadrant] = oid
    out = np.zeros_like(mask)
    for oid, quadrant in quadrant_of.items():
        out[mask == oid] = quadrant  # at most 4 cheap passes; faster than a lookup-table gather
    return out


def _split(
    ids: list[int], centres: dict[int, tuple[float, float]], axis: int, centre: float
) -> float:
    """Split coordinate on one axis (0 = x, 1 = y) following the rules in `apply_mask_mode`."""
    values = [centres[oid][axis] for oid in ids]
    if len(values) == 1:
        return centre
    if len(values) < 4 and (all(v < centre for v in values) or all(v > centre for v in values)):
        return centre
    return sum(values) / len(values)


def _on_line(value: float, line: float) -> bool:
    """Whether a centre coordinate is on a split line (the original SST-GUI's 1e-9 tolerance)."""
    return abs(value - line) <= 1e-9
