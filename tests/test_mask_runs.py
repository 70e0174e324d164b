"""The run-length wire format shared with ui/js/edit_model.js."""

from __future__ import annotations

import numpy as np
import pytest

from sst_desktop.data.mask_runs import crop_dict, decode_runs, encode_runs
from sst_desktop.errors import MaskError


def test_encode_matches_the_js_model_and_round_trips():
    mask = np.array([[0, 0, 3, 3], [3, 0, 255, 1]], dtype=np.uint8)
    # The same pairs edit_model.test.mjs expects from encodeRuns for these pixels.
    assert encode_runs(mask) == [0, 2, 3, 3, 0, 1, 255, 1, 1, 1]
    np.testing.assert_array_equal(decode_runs(encode_runs(mask), 4, 2), mask)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 4, size=(37, 53), dtype=np.uint8)
    np.testing.assert_array_equal(decode_runs(encode_runs(noisy), 53, 37), noisy)
    assert encode_runs(np.zeros((0, 0), dtype=np.uint8)) == []


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([0, 7], "cover 7 pixels, the image has 4×2"),
        ([0], "pairs"),
        ("0,8", "pairs"),
        ([256, 8], "0–255"),
        ([1, -1, 0, 9], "negative"),
        ([1.5, 8], None),
    ],
)
def test_bad_runs_are_one_clear_error(runs, message):
    with pytest.raises(MaskError) as info:
        decode_runs(runs, 4, 2, name="ref of b1")
    assert str(info.value).startswith("ref of b1: ")
    if message:
        assert message in str(info.value)


def test_crop_dict():
    crop = np.array([[True, False], [True, True]])
    assert crop_dict(crop, 5, 7) == {
        "x0": 5,
        "y0": 7,
        "width": 2,
        "height": 2,
        "runs": [1, 1, 0, 1, 1, 2],
    }
