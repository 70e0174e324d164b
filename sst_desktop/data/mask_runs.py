"""Run-length encoded masks, the label screen's wire format (the same as ui/js/edit_model.js).

An ID mask of H×W pixels is sent as `[value, length, value, length, ...]` in row-major order; a
binary working mask as its bounding box `{x0, y0, width, height, runs}` with values 0/1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sst_desktop.errors import MaskError

MAX_ID = 255


def encode_runs(mask: np.ndarray) -> list[int]:
    """`[value, length, ...]` of a 2-D uint8 mask in row-major order (empty for no pixels)."""
    flat = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    if flat.size == 0:
        return []
    starts = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], starts, [flat.size]))
    values = flat[bounds[:-1]]
    lengths = np.diff(bounds)
    return np.stack([values.astype(np.int64), lengths]).T.ravel().tolist()


def decode_runs(runs: Any, width: int, height: int, name: str = "mask") -> np.ndarray:
    """The (height, width) uint8 mask `encode_runs` encoded; `MaskError` naming `name` if malformed."""
    if not isinstance(runs, (list, tuple)) or len(runs) % 2:
        raise MaskError(f"{name}: runs must be a list of [value, length] pairs.")
    try:
        array = np.asarray(runs)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is None or (array.size and array.dtype.kind not in "iu"):
        raise MaskError(f"{name}: runs must be whole numbers.")
    pairs = array.astype(np.int64).reshape(-1, 2)
    values, lengths = pairs[:, 0], pairs[:, 1]
    if (values < 0).any() or (values > MAX_ID).any():
        raise MaskError(f"{name}: object IDs must be 0–{MAX_ID}.")
    if (lengths < 0).any():
        raise MaskError(f"{name}: run lengths must not be negative.")
    total = int(lengths.sum())
    if total != width * height:
        raise MaskError(f"{name}: the runs cover {total} pixels, the image has {width}×{height}.")
    return np.repeat(values.astype(np.uint8), lengths).reshape(height, width)


def crop_dict(crop: np.ndarray, x0: int, y0: int) -> dict[str, Any]:
    """A binary crop at (x0, y0) as `{x0, y0, width, height, runs}`."""
    h, w = crop.shape
    return {
        "x0": int(x0),
        "y0": int(y0),
        "width": int(w),
        "height": int(h),
        "runs": encode_runs(np.asarray(crop, dtype=np.uint8)),
    }
