"""The label screen's ID-map API: load a reference or a prediction, send mask crops, save."""

from __future__ import annotations

import os

import numpy as np
import pytest
from _app_helpers import HEIGHT, WIDTH, make_dataset, project_config

from sst_desktop.app.api import Api
from sst_desktop.data import masks
from sst_desktop.data.mask_runs import decode_runs, encode_runs
from sst_desktop.errors import UserError


@pytest.fixture()
def app(tmp_path):
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    summary = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))
    return api, summary["id"], tmp_path / "proj"


def _mask(*boxes: tuple[int, int, int, int, int]) -> np.ndarray:
    out = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for value, y0, y1, x0, x1 in boxes:
        out[y0:y1, x0:x1] = value
    return out


def test_frame_labels_reference_else_prediction_else_none(app):
    api, pid, folder = app
    empty = api.frame_labels(pid, "beetle-0")
    assert (empty["width"], empty["height"], empty["source"]) == (WIDTH, HEIGHT, "none")
    assert empty["runs"] == [0, WIDTH * HEIGHT] and empty["stale"] is False

    pred = _mask((1, 5, 20, 5, 30), (2, 30, 40, 50, 70))
    masks.write_mask(folder / "pred_masks" / "beetle-0.png", pred)
    loaded = api.frame_labels(pid, "beetle-0")
    assert loaded["source"] == "pred" and loaded["stale"] is False
    np.testing.assert_array_equal(decode_runs(loaded["runs"], WIDTH, HEIGHT), pred)

    # A newer reference elsewhere in the group makes the prediction stale.
    ref_other = folder / "ref_masks" / "beetle-1.png"
    masks.write_mask(ref_other, _mask((1, 0, 10, 0, 10)))
    stamp = os.stat(folder / "pred_masks" / "beetle-0.png").st_mtime_ns + 10**9
    os.utime(ref_other, ns=(stamp, stamp))
    assert api.frame_labels(pid, "beetle-0")["stale"] is True

    ref = _mask((3, 10, 20, 10, 20))
    masks.write_mask(folder / "ref_masks" / "beetle-0.png", ref)
    loaded = api.frame_labels(pid, "beetle-0")
    assert loaded["source"] == "ref" and loaded["stale"] is False
    np.testing.assert_array_equal(decode_runs(loaded["runs"], WIDTH, HEIGHT), ref)


def test_the_exif_rotated_frame_has_its_displayed_size(app):
    api, pid, _ = app
    rotated = api.frame_labels(pid, "moth-0")
    assert (rotated["width"], rotated["height"]) == (HEIGHT, WIDTH)


def test_save_labels_writes_exactly_the_map_and_counts_stale_predictions(app):
    api, pid, folder = app
    for pk in ("beetle-1", "beetle-2"):
        masks.write_mask(folder / "pred_masks" / f"{pk}.png", _mask((1, 0, 5, 0, 5)))
        os.utime(folder / "pred_masks" / f"{pk}.png", (1_700_000_000, 1_700_000_000))
    labels = _mask((4, 3, 9, 3, 9), (7, 40, 50, 60, 90))
    out = api.save_labels(
        pid, "beetle-0", {"width": WIDTH, "height": HEIGHT, "runs": encode_runs(labels)}
    )
    assert out["ids"] == [4, 7] and out["stale_predictions"] == 2
    saved = masks.read_mask(folder / "ref_masks" / "beetle-0.png")
    np.testing.assert_array_equal(saved, labels)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {"width": WIDTH + 1, "height": HEIGHT, "runs": [0, (WIDTH + 1) * HEIGHT]},
            "its image is 96×64",
        ),
        ({"width": WIDTH, "height": HEIGHT, "runs": [0, 5]}, "cover 5 pixels"),
        ({"width": WIDTH, "height": HEIGHT, "runs": [300, WIDTH * HEIGHT]}, "0–255"),
        ({"width": WIDTH, "height": HEIGHT, "runs": [0, WIDTH * HEIGHT]}, "Nothing to save"),
        ([1, 2], "'labels' must be an object"),  # the API's argument check
    ],
)
def test_bad_labels_are_refused_and_nothing_is_written(app, labels, message):
    api, pid, folder = app
    with pytest.raises(UserError) as info:
        api.save_labels(pid, "beetle-0", labels)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not (folder / "ref_masks" / "beetle-0.png").exists()


def test_mask_crop_needs_the_open_session_and_sends_the_working_mask(app):
    api, pid, folder = app
    with pytest.raises(UserError, match="open it again"):
        api.mask_crop(pid, "beetle-0", 0)
    masks.write_mask(folder / "ref_masks" / "beetle-0.png", _mask((2, 10, 20, 30, 45)))
    frame = api.open_frame(pid, "beetle-0")
    (saved,) = frame["masks"]
    crop = api.mask_crop(pid, "beetle-0", saved["index"])
    assert (crop["x0"], crop["y0"], crop["width"], crop["height"]) == (30, 10, 15, 10)
    assert crop["runs"] == [1, 150]
