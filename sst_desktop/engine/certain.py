"""The full-size ID mask without reading full-size logits where the low-res logits decide it.

Bilinear upsampling makes each full-size logit a weighted mean (weights >= 0, summing to 1) of
four neighbouring low-res logits. Where every low-res logit around a cell puts one object above
all others and above 0 by more than float32 rounding can move a mean, or every object below 0,
the ID of each pixel in that cell is known without the upsampled values. Only the other cells
(along object boundaries) are composed from the upsampled logits, with the same rule, so the
mask is pixel for pixel that of `compose_id_mask` over the whole image. Finite logits only: the
caller checks the low-res ones (bilinear means of finite values are never NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Bound on how far float32 rounding can move a bilinear mean outside its four inputs, relative to
# their largest magnitude (a few float32 epsilons; 1e-5 is a margin of about 80).
_ROUNDING = 1e-5
UNDECIDED = -1


def source_cells(out_size: int, in_size: int) -> np.ndarray:
    """For each output index, the low-res index below it (align_corners=False), as float64 says.

    The upsampling kernel works in float32 and may round to the neighbouring cell at a boundary;
    `cell_ids` therefore looks one cell further on each side.
    """
    real = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    return np.clip(np.floor(np.maximum(real, 0.0)), 0, in_size - 1).astype(np.int64)


def _window(values: np.ndarray, reduce: Callable, axis: int) -> np.ndarray:
    """`reduce` over cells i-1 .. i+2 along `axis` (edges clamped)."""
    n = values.shape[axis]
    out = values
    for shift in (-1, 1, 2):
        index = np.clip(np.arange(n) + shift, 0, n - 1)
        out = reduce(out, np.take(values, index, axis=axis))
    return out


def cell_ids(low_res: np.ndarray, obj_ids: Sequence[int]) -> np.ndarray:
    """Per low-res cell (h, w): the ID every pixel there gets, or UNDECIDED.

    `low_res` is (O, h, w) float32 and finite. A cell is decided when, over the 4x4 low-res
    logits around it, one object's smallest logit exceeds every other object's largest and 0 by
    more than the rounding bound, or when every object's largest logit is below minus that bound.
    """
    lo = _window(_window(low_res, np.minimum, 1), np.minimum, 2)
    hi = _window(_window(low_res, np.maximum, 1), np.maximum, 2)
    slack = _ROUNDING * (np.abs(low_res).max() + 1e-30)
    ids = np.full(low_res.shape[1:], UNDECIDED, dtype=np.int16)
    ids[np.all(hi < -slack, axis=0)] = 0
    for index, obj_id in enumerate(obj_ids):
        others = np.delete(hi, index, axis=0)
        top = others.max(axis=0) if len(others) else np.full(lo.shape[1:], -np.inf)
        wins = lo[index] - slack > np.maximum(top + slack, 0.0)
        ids[wins] = int(obj_id)
    return ids


def compose_finite(logits: np.ndarray, obj_ids: Sequence[int]) -> np.ndarray:
    """`compose_id_mask`'s rule on finite (O, h, w) logits, in NumPy (any strides): the highest
    positive logit wins, ties to the first object, else 0."""
    best = logits[0]
    ids = np.full(best.shape, obj_ids[0], dtype=np.uint8)
    for index in range(1, len(obj_ids)):
        other = logits[index]
        ids[other > best] = obj_ids[index]
        best = np.maximum(best, other)
    ids[~(best > 0)] = 0  # "not above 0", as torch's rule says it (NaN included)
    return ids


def compose_decided(
    low_res: np.ndarray, full: np.ndarray, obj_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The ID mask of the finite upsampled logits `full` (O, H, W) of `low_res` (O, h, w), read
    only in undecided cells, and its pixel count per ID 0..255 (decided cells counted from
    their size, not their pixels)."""
    height, width = full.shape[1:]
    cells = cell_ids(low_res, obj_ids)
    rows = source_cells(height, low_res.shape[1])
    cols = source_cells(width, low_res.shape[2])
    row_counts = np.bincount(rows, minlength=low_res.shape[1])
    col_counts = np.bincount(cols, minlength=low_res.shape[2])
    decided = cells != UNDECIDED
    counts = np.bincount(
        cells[decided],
        weights=np.outer(row_counts, col_counts)[decided].astype(np.float64),
        minlength=256,
    ).astype(np.int64)
    filled = np.repeat(np.clip(cells, 0, 255).astype(np.uint8)[:, cols], row_counts, axis=0)
    undecided = ~decided[:, cols]  # (h, width): per low-res row, which columns
    starts = np.concatenate([[0], np.cumsum(row_counts)])
    for cell_row in np.flatnonzero(undecided.any(axis=1)):
        r0, r1 = int(starts[cell_row]), int(starts[cell_row + 1])
        if r0 == r1:
            continue
        flags = undecided[cell_row].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flags, [0]])))
        for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
            region = compose_finite(full[:, r0:r1, c0:c1], obj_ids)
            filled[r0:r1, c0:c1] = region
            counts += np.bincount(region.ravel(), minlength=256)
    return filled, counts
