"""Small-region clean-up of candidate masks without OpenCV: components from runs of pixels."""

from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start column and end column (exclusive) of every horizontal run of True pixels."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a bool mask as runs: (rows, starts, ends, component of each run)."""
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return rows, starts, ends, np.zeros(0, dtype=np.int64)
    stride = mask.shape[1] + 2  # keys keep runs of different rows apart
    start_key, end_key = rows * stride + starts, rows * stride + ends
    # Runs a (row r-1) and b (row r) touch, diagonals included, when a.start <= b.end and b.start <= a.end.
    lo = np.searchsorted(end_key, (rows - 1) * stride + starts, side="left")
    hi = np.searchsorted(start_key, (rows - 1) * stride + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), counts)
    offsets = np.arange(len(b)) - np.repeat(np.cumsum(counts) - counts, counts)
    a = np.repeat(lo, counts) + offsets
    labels = np.arange(n)
    while len(a):
        # Hook the larger root of every touching pair onto the smaller, then compress paths.
        la, lb = labels[a], labels[b]
        low = np.minimum(la, lb)
        new = labels.copy()
        np.minimum.at(new, la, low)
        np.minimum.at(new, lb, low)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            break
        labels = new
    _, component = np.unique(labels, return_inverse=True)
    return rows, starts, ends, component.reshape(-1)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") smaller than `min_area`; (mask, changed)."""
    fill = mode == "holes"
    working = ~mask if fill else mask
    rows, starts, ends, component = connected_components(working)
    if len(rows) == 0:
        return mask, False
    sizes = np.bincount(component, weights=ends - starts)
    small = sizes < min_area
    if not fill and small.all():
        small[np.argmax(sizes)] = False  # never remove every island: keep the largest
    if not small.any():
        return mask, False
    pick = small[component]
    delta = np.zeros((mask.shape[0], mask.shape[1] + 1), dtype=np.int32)
    np.add.at(delta, (rows[pick], starts[pick]), 1)
    np.add.at(delta, (rows[pick], ends[pick]), -1)
    paint = np.cumsum(delta, axis=1)[:, :-1] > 0
    return (mask | paint) if fill else (mask & ~paint), True


def clean_small_regions(
    masks: list[np.ndarray], min_area: float, nms_thresh: float
) -> tuple[list[int], list[np.ndarray]]:
    """Fill small holes and drop small islands in each mask, then drop new duplicates by box NMS.

    Returns the indices kept (in input order) and every cleaned mask.
    """
    import torch
    from torchvision.ops.boxes import batched_nms

    if not masks:
        return [], []
    cleaned, boxes, unchanged = [], [], []
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        mask, changed_holes = remove_small_regions(mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        cleaned.append(mask)
        unchanged.append(0.0 if (changed_holes or changed_islands) else 1.0)
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])
    # Like SAM's own post-processing: among duplicates prefer masks that needed no clean-up.
    keep = batched_nms(
        torch.as_tensor(boxes, dtype=torch.float32),
        torch.as_tensor(unchanged),
        torch.zeros(len(boxes), dtype=torch.int64),
        iou_threshold=nms_thresh,
    ).tolist()
    return sorted(keep), cleaned
