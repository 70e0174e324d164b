"""Thresholded bilinear upsampling of low-res mask logits, computing full-size pixels only where needed.

Upstream's automatic mask generator upsamples every mask's logits to the crop size (bilinear,
align_corners=False), then counts pixels above three thresholds (the stability score), builds the
binary mask and its box. The same numbers come out here with far less work, exactly:

- Bilinear upsampling makes each output pixel a convex combination of two neighbouring low-res
  rows times two neighbouring columns. With the 4x4 low-res window around a pixel's source cell
  (one cell of slack on each side, so a rounding in the source-index formula cannot matter) and a
  small value margin for float rounding, a pixel is *certainly* above a threshold when the window's
  minimum is, and certainly not when the window's maximum is not.
- Counting certain pixels needs no upsampling: output rows (columns) sharing a source cell are
  counted once per cell, so a count is a small bilinear form over the low-res grid. A mask whose
  stability score is certainly below the threshold is rejected from these bounds alone.
- Only masks with uncertain cells are upsampled (with upstream's own call), and pixels are compared
  only inside the box of the uncertain cells, for the thresholds that have any. Asking the kernel
  for just that block with the full-size scale was tried: it is not bit for bit (the kernel's loops,
  and with them the float rounding of a few pixels, change with the output's shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Measured:
    """Masks of one batch after the stability filter: what upstream computes from full logits."""

    keep: torch.Tensor  # (k,) indices into the batch of the masks that passed
    stability: torch.Tensor  # (k,) float32, upstream's formula
    boxes: torch.Tensor  # (k, 4) int64 x0, y0, x1, y1 inclusive; [0, 0, 0, 0] when empty
    masks: list[np.ndarray]  # k bool arrays, each the mask cropped to its box
    exact_pixels: int = 0  # full-size pixels actually computed (for benchmarks)
    rejected_by_bounds: int = 0  # masks rejected without upsampling


class Geometry:
    """Which low-res cell each output row and column reads from, for one (input, output) size."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        self.in_hw, self.out_hw = tuple(in_hw), tuple(out_hw)
        rows = _source_cells(in_hw[0], out_hw[0])
        cols = _source_cells(in_hw[1], out_hw[1])
        self.rows, self.cols = torch.from_numpy(rows), torch.from_numpy(cols)
        self.row_count = np.bincount(rows, minlength=in_hw[0]).astype(np.float64)
        self.col_count = np.bincount(cols, minlength=in_hw[1]).astype(np.float64)
        # Output index range [start, stop) of each cell's rows (columns).
        cells = np.arange(in_hw[0])
        self.row_start = np.searchsorted(rows, cells, side="left")
        self.row_stop = np.searchsorted(rows, cells, side="right")
        cells = np.arange(in_hw[1])
        self.col_start = np.searchsorted(cols, cells, side="left")
        self.col_stop = np.searchsorted(cols, cells, side="right")

    def block(self, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int]:
        """Output pixels y0, y1, x0, x1 (ends exclusive) of the cells r0..r1 x c0..c1."""
        return (
            int(self.row_start[r0]),
            int(self.row_stop[r1]),
            int(self.col_start[c0]),
            int(self.col_stop[c1]),
        )


def _source_cells(n_in: int, n_out: int) -> np.ndarray:
    """Low-res index each output index reads first (align_corners=False), in float64."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(np.floor(np.maximum(src, 0.0)).astype(np.int64), 0, n_in - 1)


def _span(flags: np.ndarray) -> np.ndarray:
    """(n, 2) first and last True index per row of (n, k) flags; -1, -1 where none."""
    n, k = flags.shape
    has = flags.any(1)
    first = np.where(has, flags.argmax(1), -1)
    last = np.where(has, k - 1 - flags[:, ::-1].argmax(1), -1)
    return np.stack([first, last], axis=1)


class _Cells:
    """Per-batch cell classification: certain / possible per threshold, spans and weighted sums."""

    def __init__(self, low_res: torch.Tensor, geometry: Geometry, cuts: list[float]) -> None:
        certain, possible = _bounds(low_res, cuts)
        self.certain = [c.cpu().numpy() for c in certain]
        weights = np.outer(geometry.row_count, geometry.col_count)
        self.maybe = [(p.cpu().numpy() * weights).sum((1, 2)) for p in possible]
        self.total = [(c * weights).sum((1, 2)) for c in self.certain]
        bands = [(p & ~c) for p, c in zip(possible, certain, strict=True)]
        self.band_any = [b.flatten(1).any(1).cpu().numpy() for b in bands]
        # 2-D running sums of covered output pixels (where a threshold has uncertain cells):
        # any block's certain count in O(1).
        self.sums = []
        for cert, uncertain in zip(self.certain, self.band_any, strict=True):
            table = None
            if uncertain.any():
                table = np.zeros((cert.shape[0], cert.shape[1] + 1, cert.shape[2] + 1))
                table[:, 1:, 1:] = (cert * weights).cumsum(1).cumsum(2)
            self.sums.append(table)
        band = (bands[0] | bands[1] | bands[2]).cpu().numpy()
        self.band_rows, self.band_cols = _span(band.any(2)), _span(band.any(1))
        mask_cells = possible[1].cpu().numpy()
        self.mask_rows, self.mask_cols = _span(mask_cells.any(2)), _span(mask_cells.any(1))

    def certain_in(self, k: int, i: int, r0: int, r1: int, c0: int, c1: int) -> float:
        """Output pixels of cells r0..r1 x c0..c1 of mask i certainly above threshold k."""
        t = self.sums[k][i]
        return t[r1 + 1, c1 + 1] - t[r0, c1 + 1] - t[r1 + 1, c0] + t[r0, c0]

    def certain_all(self, k: int, i: int) -> float:
        """Output pixels of mask i certainly above threshold k."""
        return self.total[k][i]


def measure(
    low_res: torch.Tensor,
    geometry: Geometry,
    threshold: float,
    offset: float,
    stability_thresh: float,
) -> Measured:
    """Stability scores, stability filter, boxes and cropped masks of (n, h, w) low-res logits,
    equal to upstream's on the (n, H, W) bilinear upsampling."""
    low_res = low_res.float()
    n = low_res.shape[0]
    cuts = [threshold - offset, threshold, threshold + offset]
    cells = _Cells(low_res, geometry, cuts)
    index = np.arange(n)
    rejected = 0
    if stability_thresh > 0.0:
        # Upper bound of intersections / unions; the margin covers float32 rounding of both sides.
        sure_union = np.array([cells.certain_all(0, i) for i in range(n)])
        with np.errstate(divide="ignore", invalid="ignore"):
            high = np.where(sure_union > 0, cells.maybe[2] / sure_union, np.inf)
        hopeless = (cells.maybe[2] == 0) | (high < stability_thresh * (1 - 1e-6))
        rejected = int(hopeless.sum())
        index = index[~hopeless]
    counts = np.zeros((len(index), 3), dtype=np.int64)
    boxes, masks, exact_pixels = [], [], 0
    for slot, i in enumerate(index.tolist()):
        exact, region, above = None, None, {}
        r0, r1 = cells.band_rows[i]
        if r0 >= 0:
            c0, c1 = cells.band_cols[i]
            y0, y1, x0, x1 = geometry.block(r0, r1, c0, c1)
            if y1 > y0 and x1 > x0:
                # Upstream's own call: a sub-block of the output is not always equal bit for
                # bit (the kernel's loops, and so the float rounding, change with its shape).
                full = F.interpolate(
                    low_res[i : i + 1, None], geometry.out_hw, mode="bilinear", align_corners=False
                )
                exact = full[0, 0, y0:y1, x0:x1]
                exact_pixels += geometry.out_hw[0] * geometry.out_hw[1]
                region = (y0, y1, x0, x1)
        for k, cut in enumerate(cuts):
            total = cells.certain_all(k, i)
            if region is not None and cells.band_any[k][i]:
                # Inside the block the exact pixels count, not the certain cells.
                total -= cells.certain_in(k, i, r0, r1, c0, c1)
                above[k] = (exact > cut).numpy()
                total += np.count_nonzero(above[k])
            counts[slot, k] = round(total)
        if region is not None and 1 not in above:
            above[1] = (exact > cuts[1]).numpy()
        box, mask = _mask_and_box(cells, i, geometry, above.get(1), region)
        boxes.append(box)
        masks.append(mask)
    counts_t = torch.as_tensor(counts, dtype=torch.int32)
    stability = counts_t[:, 2] / counts_t[:, 0]  # upstream's int32 / int32 -> float32
    keep = torch.as_tensor(index, dtype=torch.int64)
    if stability_thresh > 0.0:
        passed = stability >= stability_thresh
        keep, stability = keep[passed], stability[passed]
        masks = [m for m, ok in zip(masks, passed.tolist(), strict=True) if ok]
        boxes = [b for b, ok in zip(boxes, passed.tolist(), strict=True) if ok]
    box_t = torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4)
    return Measured(keep, stability, box_t, masks, exact_pixels, rejected)


def _window_max(values: torch.Tensor) -> torch.Tensor:
    """Max over each cell's 4x4 window (rows r-1..r+2, columns c-1..c+2) of (n, h, w) values."""
    h, w = values.shape[-2:]
    padded = F.pad(values, (1, 2, 1, 2), value=-torch.inf)
    rows = torch.maximum(
        torch.maximum(padded[:, 0:h], padded[:, 1 : h + 1]),
        torch.maximum(padded[:, 2 : h + 2], padded[:, 3 : h + 3]),
    )
    return torch.maximum(
        torch.maximum(rows[:, :, 0:w], rows[:, :, 1 : w + 1]),
        torch.maximum(rows[:, :, 2 : w + 2], rows[:, :, 3 : w + 3]),
    )


def _bounds(low_res: torch.Tensor, cuts: list[float]) -> tuple[list, list]:
    """Per threshold, (n, h, w) cells whose output pixels are certainly / possibly above it."""
    high = _window_max(low_res)
    low = -_window_max(-low_res)
    # Float32 rounding of a convex combination stays within a few ulps of the largest input.
    margin = (1e-5 * (1.0 + low_res.abs().flatten(1).amax(1)))[:, None, None]
    certain = [low - margin > cut for cut in cuts]
    possible = [high + margin > cut for cut in cuts]
    return certain, possible


def _mask_and_box(
    cells: _Cells,
    i: int,
    geometry: Geometry,
    above: np.ndarray | None,
    region: tuple[int, int, int, int] | None,
) -> tuple[list[int], np.ndarray]:
    """Box (upstream's convention) and the mask cropped to it: certain cells, with the exact
    block thresholded (`above`) where it lies."""
    r0, r1 = cells.mask_rows[i]
    if r0 < 0:
        return [0, 0, 0, 0], np.zeros((1, 1), dtype=bool)
    c0, c1 = cells.mask_cols[i]
    py0, py1, px0, px1 = geometry.block(r0, r1, c0, c1)
    if region == (py0, py1, px0, px1):
        mask = above  # the uncertain block is the whole possible area
    else:
        rows = geometry.rows.numpy()[py0:py1]
        cols = geometry.cols.numpy()[px0:px1]
        mask = cells.certain[1][i][np.ix_(rows, cols)]
        if region is not None:
            y0, y1, x0, x1 = region
            # The exact block can reach beyond the possible area (uncertain at another cut).
            ys, ye, xs, xe = max(y0, py0), min(y1, py1), max(x0, px0), min(x1, px1)
            if ye > ys and xe > xs:
                block = above[ys - y0 : ye - y0, xs - x0 : xe - x0]
                mask[ys - py0 : ye - py0, xs - px0 : xe - px0] = block
    rows_any = mask.any(1)
    if not rows_any.any():
        return [0, 0, 0, 0], np.zeros((1, 1), dtype=bool)
    ry = np.flatnonzero(rows_any)[[0, -1]]
    cx = np.flatnonzero(mask.any(0))[[0, -1]]
    crop = mask[ry[0] : ry[1] + 1, cx[0] : cx[1] + 1]
    box = [int(cx[0]) + px0, int(ry[0]) + py0, int(cx[1]) + px0, int(ry[1]) + py0]
    return box, crop
