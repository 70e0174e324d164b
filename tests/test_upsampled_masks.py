"""Thresholds on upsampled mask logits from low-res bounds: the same numbers as upstream's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sam2.utils.amg import batched_mask_to_box, calculate_stability_score

from sst_desktop.engine.upsampled_masks import Geometry, measure

LOW = 64  # low-res logits of a 256-px model

# Output sizes: up- and downsampling, one side equal to the input's, odd ratios, a 2048-px side.
SIZES = [(480, 640), (120, 160), (40, 30), (64, 100), (100, 64), (1536, 2048)]


def _upstream(low: torch.Tensor, hw: tuple[int, int], stability_thresh: float):
    """What upstream's generator computes from full-size logits (threshold 0, offset 1)."""
    logits = F.interpolate(low[:, None], hw, mode="bilinear", align_corners=False)[:, 0]
    stability = calculate_stability_score(logits, 0.0, 1.0)
    keep = torch.arange(len(low))
    if stability_thresh > 0:
        passed = stability >= stability_thresh
        keep, logits, stability = keep[passed], logits[passed], stability[passed]
    masks = logits > 0
    return keep, stability, batched_mask_to_box(masks), masks


def _blobs(n: int, seed: int) -> torch.Tensor:
    """Smooth logits: disks of random centre, radius and steepness (as real weights give)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(LOW), torch.arange(LOW), indexing="ij")
    centre = torch.rand(n, 2, generator=gen) * LOW
    radius = torch.rand(n, generator=gen) * LOW * 0.3
    slope = torch.rand(n, generator=gen) * 3
    dist = (
        (xx[None] + 0.5 - centre[:, 0, None, None]) ** 2
        + (yy[None] + 0.5 - centre[:, 1, None, None]) ** 2
    ).sqrt()
    return (radius[:, None, None] - dist) * slope[:, None, None]


def _noise(n: int, seed: int, scale: float) -> torch.Tensor:
    """Noisy logits like random weights' (scale 0.4) or noisy with large values."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, LOW, LOW, generator=gen) * scale


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("hw", SIZES)
def test_a_mask_upsampled_alone_equals_it_in_a_batch(hw, threads):
    """Only the masks that need it are upsampled, one at a time: the same bits as upstream's
    whole batch (the kernel splits work across threads differently for each)."""
    low = _noise(5, seed=1, scale=5.0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch = F.interpolate(low[:, None], hw, mode="bilinear", align_corners=False)
        for i in range(len(low)):
            one = F.interpolate(low[i : i + 1, None], hw, mode="bilinear", align_corners=False)
            assert torch.equal(one, batch[i : i + 1])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("kind", ["blobs", "noise", "loud-noise"])
@pytest.mark.parametrize("stability_thresh", [0.0, 0.5, 0.95])
def test_measure_equals_upstream(hw, kind, stability_thresh):
    low = {
        "blobs": _blobs(40, seed=2),
        "noise": _noise(40, seed=3, scale=0.4),
        "loud-noise": _noise(40, seed=4, scale=5.0),
    }[kind]
    found = measure(low, Geometry((LOW, LOW), hw), 0.0, 1.0, stability_thresh)
    keep, stability, boxes, masks = _upstream(low, hw, stability_thresh)
    assert torch.equal(found.keep, keep)
    assert torch.equal(found.stability.nan_to_num(-1.0), stability.nan_to_num(-1.0))
    assert torch.equal(found.boxes, boxes.long())
    for crop, box, mask in zip(found.masks, boxes.tolist(), masks.numpy(), strict=True):
        x0, y0, x1, y1 = box
        assert np.array_equal(crop, mask[y0 : y1 + 1, x0 : x1 + 1])


def test_bounds_reject_hopeless_masks_without_upsampling():
    """Noise never reaches the upper cut: rejected unseen. Loud noise cannot be bounded: all of it
    is upsampled and measured exactly."""
    hw = (480, 640)
    geometry = Geometry((LOW, LOW), hw)
    noise = measure(_noise(20, seed=5, scale=0.4), geometry, 0.0, 1.0, 0.8)
    assert noise.rejected_by_bounds == 20 and noise.exact_pixels == 0
    loud = measure(_noise(20, seed=6, scale=5.0), geometry, 0.0, 1.0, 0.8)
    assert loud.rejected_by_bounds == 0 and loud.exact_pixels == 20 * hw[0] * hw[1]
