"""`--view`: the project of a mask file, overlays written without a window, the window hand-off."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _run_helpers import image_path, make_project, reference_mask, run_cli
from PIL import Image

from sst_desktop.app.viewer import find_mask_context, render_overlays
from sst_desktop.cli import main
from sst_desktop.data.masks import write_mask
from sst_desktop.data.palette import id_color
from sst_desktop.errors import UserError


@pytest.fixture
def project_with_pred(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    pred = spec.parent / "pred_masks" / "a1.png"
    write_mask(pred, reference_mask((64, 64)))  # a1 is 64x64; a prediction written by hand
    return spec, pred


def test_find_mask_context_pred_and_ref(project_with_pred):
    spec, pred = project_with_pred
    project, pk, kind = find_mask_context(pred)
    assert (pk, kind) == ("a1", "pred")
    assert project.root == spec.parent
    _, pk, kind = find_mask_context(spec.parent / "ref_masks" / "a0.png")
    assert (pk, kind) == ("a0", "ref")


def test_find_mask_context_through_the_registry(project_with_pred, tmp_path):
    from sst_desktop.data import registry

    spec, pred = project_with_pred
    elsewhere = tmp_path / "specs" / "spec.json"
    elsewhere.parent.mkdir()
    shutil.move(spec, elsewhere)  # root in it is absolute, so it still describes the project
    with pytest.raises(UserError, match="no project found"):
        find_mask_context(pred)
    registry.register(elsewhere)
    project, pk, kind = find_mask_context(pred)
    assert (pk, kind) == ("a1", "pred") and project.root == spec.parent


def test_find_mask_context_errors(project_with_pred, tmp_path):
    spec, pred = project_with_pred
    with pytest.raises(UserError, match="does not exist"):
        find_mask_context(tmp_path / "missing.png")
    loose = tmp_path / "loose.png"
    write_mask(loose, np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="pred_masks/ or ref_masks/"):
        find_mask_context(loose)
    stranger = spec.parent / "pred_masks" / "nobody.png"
    write_mask(stranger, np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="'nobody'"):
        find_mask_context(stranger)


def test_render_one_overlay_keeps_the_image_size_and_colours_objects(project_with_pred, tmp_path):
    spec, pred = project_with_pred
    out = render_overlays([pred], tmp_path / "out" / "a1.png", alpha=0.5)
    image = np.asarray(Image.open(image_path(spec, "a1")).convert("RGB")).astype(int)
    result = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert result.shape == image.shape
    mask = reference_mask((64, 64))
    assert np.array_equal(result[mask == 0], image[mask == 0])  # background untouched
    # The object's centre: half image, half its palette colour.
    y, x = 25, 21
    assert mask[y, x] == 1
    expected = np.rint(image[y, x] * 0.5 + np.array(id_color(1)) * 0.5)
    assert np.abs(result[y, x] - expected).max() <= 1
    assert list(out.parent.glob(".*")) == []


def test_cli_view_out_tiles_several_masks(project_with_pred, tmp_path):
    spec, pred = project_with_pred
    ref = spec.parent / "ref_masks" / "a0.png"
    out = tmp_path / "sheet.jpg"
    result = run_cli("--view", str(pred), str(ref), "--out", str(out), "--alpha", "0.7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    with Image.open(out) as sheet:
        assert sheet.format == "JPEG"
        # two tiles side by side, each at least as big as its image, plus captions
        assert sheet.width >= 64 + 72 and sheet.height > 64


def test_many_masks_shrink_their_tiles_to_keep_the_sheet_bounded(
    project_with_pred, tmp_path, monkeypatch
):
    # `--view pred_masks/*.png --out` over a big project must not build a sheet (or hold
    # full-size overlays) without bound: tiles shrink so the sheet fits SHEET_MAX_SIDE.
    import sst_desktop.app.viewer as viewer

    spec, pred = project_with_pred
    masks = []
    for pk in ("a1", "a2", "a3", "a4"):
        size = Image.open(image_path(spec, pk)).size
        write_mask(spec.parent / "pred_masks" / f"{pk}.png", reference_mask(size))
        masks.append(spec.parent / "pred_masks" / f"{pk}.png")
    masks.append(spec.parent / "ref_masks" / "a0.png")
    monkeypatch.setattr(viewer, "SHEET_MAX_SIDE", 150)
    shrunk = []
    real_tile = viewer.tile_images

    def spy(images, captions, max_side=viewer.TILE_MAX_SIDE):
        shrunk.extend(max(img.size) for img in images)
        return real_tile(images, captions, max_side=max_side)

    monkeypatch.setattr(viewer, "tile_images", spy)
    out = render_overlays(masks, tmp_path / "sheet.png")
    with Image.open(out) as sheet:
        assert max(sheet.size) <= 150
    assert len(shrunk) == 5 and max(shrunk) <= 150 // 3  # scaled as soon as each was made


def test_cli_view_errors_exit_2(project_with_pred, tmp_path, capsys):
    spec, pred = project_with_pred
    assert main(["--view", str(tmp_path / "no.png"), "--out", str(tmp_path / "o.png")]) == 2
    assert "no.png" in capsys.readouterr().err
    assert main(["--view", str(pred), "--out", str(tmp_path / "o.gif")]) == 2
    assert ".png" in capsys.readouterr().err
    bad = spec.parent / "pred_masks" / "a2.png"
    write_mask(bad, np.zeros((10, 10), np.uint8))  # a2's image is 56x80
    assert main(["--view", str(bad), "--out", str(tmp_path / "o.png")]) == 2
    assert "10x10" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_cli_view_without_out_opens_the_app_on_the_masks(project_with_pred, monkeypatch):
    """The window itself is the GUI's to test; here only the hand-off (a double of run_app)."""
    import sst_desktop.app.window
    import sst_desktop.cli

    spec, pred = project_with_pred
    calls = []
    monkeypatch.setenv("DISPLAY", ":99")
    # Whether Qt can start on :99 depends on the machine; the hand-off is what is tested here
    # (without this, a failed check would serve the app in the browser until interrupted).
    monkeypatch.setattr(sst_desktop.cli, "_window_can_open", lambda: True)
    monkeypatch.setattr(sst_desktop.app.window, "run_app", lambda **kw: calls.append(kw) or 0)
    assert main(["--view", str(pred)]) == 0
    assert calls == [{"view": [str(pred)]}]
