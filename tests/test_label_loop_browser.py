"""The labelling loop in Debian's chromium: Discard, refine into a new object, correcting a
prediction, counts that count a frame once, and a reload in the middle of a candidate job.
Every check of a saved reference compares the exact pixels of ref_masks/{pk}.png."""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from sst_desktop.data import masks
from sst_desktop.data.mask_runs import decode_runs
from tests._browser_helpers import (
    candidate_settings,
    chromium_page,
    in_process_server,
    specimen_config,
    stop_in_process,
)

pytestmark = pytest.mark.browser

MODEL_TIMEOUT_MS = 240_000
STEPS_SHOWN = "/step \\d+ of \\d+/.test(document.getElementById('cand-progress-text')?.textContent)"
W, H = 160, 120


@pytest.fixture
def page(request):
    with chromium_page(request) as pg:
        yield pg


@pytest.fixture
def app(tmp_path, sam2_checkpoint):
    """A project of the specimen photos (tiny model, 256 px, CPU) and a real server in-process."""
    folder = tmp_path / "project"
    config = specimen_config(
        tmp_path / "data", folder, "Loop test", checkpoint=str(sam2_checkpoint)
    )
    api, running = in_process_server()
    summary = api.create_project(config)
    pid = summary["id"]
    groups = {g["label"]: g["key"] for g in api.list_groups(pid)}
    ctx = {
        "api": api,
        "pid": pid,
        "folder": folder,
        "url": running.url,
        "beetle": groups["taxon=beetle"],
    }
    try:
        yield ctx
    finally:
        stop_in_process(api, running)


def _label_url(app, pk: str) -> str:
    q = lambda v: quote(str(v), safe="")  # noqa: E731
    return f"{app['url']}#/p/{q(app['pid'])}/label/{q(app['beetle'])}/{q(pk)}"


def _open_label(page, app, pk: str, source: str) -> None:
    page.goto(_label_url(app, pk))
    _wait_label(page, pk, source)


def _wait_label(page, pk: str, source: str) -> None:
    page.wait_for_selector(f'#stage[data-pk="{pk}"][data-source="{source}"]')
    page.wait_for_selector(".stage-overlay.hidden", state="attached")


def _objects(page) -> str:
    return page.get_attribute("#stage", "data-objects")


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image point (x, y), through the canvas's view transform."""
    return page.evaluate(
        """([x, y]) => {
          const c = document.querySelector('#stage canvas');
          const r = c.getBoundingClientRect();
          const s = Number(c.dataset.scale);
          return [r.left + Number(c.dataset.tx) + x * s, r.top + Number(c.dataset.ty) + y * s];
        }""",
        [x, y],
    )


# Records the image point of every mouse press on the label canvas, computed exactly as the
# canvas does (same doubles), so the expected brush pixels can be computed here.
RECORD_PRESSES_JS = """() => {
  const c = document.querySelector('#stage canvas');
  window.__presses = [];
  c.addEventListener('mousedown', (e) => {
    const r = c.getBoundingClientRect();
    window.__presses.push([(e.clientX - r.left - Number(c.dataset.tx)) / Number(c.dataset.scale),
      (e.clientY - r.top - Number(c.dataset.ty)) / Number(c.dataset.scale)]);
  }, true);
}"""


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    """The pixels one brush dab of radius r at (cx, cy) covers: centres within r (edit_model.js)."""
    out = np.zeros((H, W), dtype=bool)
    for py in range(max(0, math.ceil(cy - r - 0.5)), min(H - 1, math.floor(cy + r - 0.5)) + 1):
        dy = py + 0.5 - cy
        half = math.sqrt(max(0.0, r * r - dy * dy))
        x0 = max(0, math.ceil(cx - half - 0.5))
        x1 = min(W - 1, math.floor(cx + half - 0.5))
        out[py, x0 : x1 + 1] = True
    return out


def _set_brush(page, radius: int) -> None:
    page.fill("#brush-size", str(radius))
    page.locator("#brush-size").dispatch_event("input")


def _press(page, x: float, y: float) -> list[float]:
    """A click at image point (x, y) on the label canvas; returns the image point it used."""
    sx, sy = _screen(page, x, y)
    page.mouse.click(sx, sy)
    return page.evaluate("() => window.__presses[window.__presses.length - 1]")


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _two_objects() -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[20:70, 20:80] = 1
    mask[80:105, 90:130] = 2
    return mask


def test_discard_leaves_the_saved_reference_byte_identical(page, app):
    ref = app["folder"] / "ref_masks" / "beetle_0.png"
    masks.write_mask(ref, _two_objects())
    before = ref.read_bytes()
    stamp = ref.stat().st_mtime_ns
    _open_label(page, app, "beetle_0", "ref")
    assert _objects(page) == "1,2"
    assert page.inner_text("#unsaved") == "Saved"
    assert page.is_disabled("#save-ref") and page.is_disabled("#discard")

    # Refine object 1 (select it, R + click), then paint with the brush: unsaved, and shown so.
    sx, sy = _screen(page, 40, 40)
    page.mouse.click(sx, sy)
    page.wait_for_selector('#stage[data-selected="1"]')
    page.keyboard.press("r")
    page.mouse.click(*_screen(page, 60, 50))
    page.wait_for_selector(".stage-overlay.hidden", state="attached", timeout=MODEL_TIMEOUT_MS)
    page.keyboard.press("b")
    page.evaluate(RECORD_PRESSES_JS)
    _press(page, 150.5, 10.5)
    assert "Unsaved" in page.inner_text("#unsaved")
    assert page.is_enabled("#save-ref")

    # Leave: the dialog offers Discard; nothing is written.
    page.click(".crumbs a:text-is('Loop test')")
    page.click("dialog[open] button[data-action='discard']")
    page.wait_for_selector("#run-all")
    assert ref.read_bytes() == before

    # Reopen: the saved state, nothing unsaved; Ctrl+S writes nothing.
    _open_label(page, app, "beetle_0", "ref")
    assert _objects(page) == "1,2"
    assert page.inner_text("#unsaved") == "Saved"
    page.locator("#stage canvas").focus()
    page.keyboard.press("Control+s")
    page.wait_for_selector(".toast:has-text('saved already')")
    assert ref.read_bytes() == before and ref.stat().st_mtime_ns == stamp

    # The Discard button does the same in place, and can be undone.
    page.keyboard.press("b")
    _press(page, 150.5, 10.5)
    page.click("#discard")
    page.wait_for_selector("#unsaved:not(.is-dirty)")
    page.keyboard.press("Control+z")
    page.wait_for_selector("#unsaved.is-dirty")
    page.keyboard.press("Control+Shift+z")
    page.wait_for_selector("#unsaved:not(.is-dirty)")
    assert ref.read_bytes() == before
    assert page.errors == []


def test_refine_with_id_2_creates_object_2_and_leaves_object_1_alone(page, app):
    ref = app["folder"] / "ref_masks" / "beetle_0.png"
    original = np.zeros((H, W), dtype=np.uint8)
    original[20:70, 20:80] = 1
    masks.write_mask(ref, original)
    _open_label(page, app, "beetle_0", "ref")
    assert _objects(page) == "1"
    # The status line says how to start a new object; ID 2 is free, so nothing is selected.
    page.locator("#stage canvas").focus()
    page.keyboard.press("2")
    assert "New object, ID 2" in page.inner_text("#label-status")
    assert page.get_attribute("#stage", "data-selected") == ""
    page.keyboard.press("r")
    page.mouse.click(*_screen(page, 110, 92))
    page.wait_for_function(
        "document.getElementById('stage').dataset.objects === '1,2'", timeout=MODEL_TIMEOUT_MS
    )
    assert page.get_attribute("#stage", "data-selected") == "2"

    # A labelled object clicked while a free ID is current is renumbered (undoable).
    page.keyboard.press("s")
    page.keyboard.press("Escape")  # new object: the first free ID, 3; a click on 1 selects it
    page.mouse.click(*_screen(page, 40, 40))
    page.wait_for_selector('#stage[data-selected="1"]')
    page.keyboard.press("3")  # a free ID picked: a click on object 1 renumbers it
    assert "New object, ID 3" in page.inner_text("#label-status")
    assert "renumber it to 3" in page.inner_text("#label-status")
    page.mouse.click(*_screen(page, 40, 40))
    page.wait_for_function("document.getElementById('stage').dataset.objects === '2,3'")
    page.keyboard.press("Control+z")
    page.wait_for_function("document.getElementById('stage').dataset.objects === '1,2'")

    page.keyboard.press("Control+s")
    page.wait_for_selector(".toast-success")
    # Expected: object 1 exactly as saved; object 2 = SAM's refined mask where it was background.
    api, pid = app["api"], app["pid"]
    refined = [m for m in api.open_frame(pid, "beetle_0")["masks"] if m["source"] == "refined"]
    crop = api.mask_crop(pid, "beetle_0", refined[-1]["index"])
    sam = np.zeros((H, W), dtype=bool)
    box = decode_runs(crop["runs"], crop["width"], crop["height"]).astype(bool)
    sam[crop["y0"] : crop["y0"] + crop["height"], crop["x0"] : crop["x0"] + crop["width"]] = box
    expected = original.copy()
    expected[sam & (original == 0)] = 2
    saved = _read(ref)
    assert (saved == 2).any()
    np.testing.assert_array_equal(saved, expected)
    np.testing.assert_array_equal(saved == 1, original == 1)
    assert page.errors == []


def test_a_corrected_prediction_saved_as_reference_holds_the_corrections(page, app):
    folder, pid = app["folder"], app["pid"]
    prediction = _two_objects()
    masks.write_mask(folder / "pred_masks" / "beetle_1.png", prediction)
    # From the viewer: "Correct this prediction" opens it with its IDs as editable objects.
    page.goto(
        f"{app['url']}#/p/{quote(pid, safe='')}/view/{quote(app['beetle'], safe='')}/beetle_1"
    )
    page.click("#correct-prediction")
    _wait_label(page, "beetle_1", "pred")
    assert _objects(page) == "1,2"
    assert page.is_visible("#label-banner")
    assert page.inner_text("#save-ref") == "Save as reference"
    badge = page.locator('#ref-list li[data-pk="beetle_1"] .badge')
    assert badge.inner_text() == "prediction"  # not silently added as a reference "to do"

    # Renumber object 1 to 4 in the objects list.
    page.fill('#objects li[data-id="1"] input', "4")
    page.locator('#objects li[data-id="1"] input').dispatch_event("change")
    page.wait_for_function("document.getElementById('stage').dataset.objects === '2,4'")
    # Erase part of object 2 (selected: the eraser touches only it), radius 6.
    page.evaluate(RECORD_PRESSES_JS)
    page.mouse.click(*_screen(page, 100, 90))
    page.wait_for_selector('#stage[data-selected="2"]')
    page.keyboard.press("e")
    _set_brush(page, 6)
    erase_at = _press(page, 92.3, 84.6)
    # Paint a new object 3 with the brush, radius 5, over background and object 4's corner.
    page.keyboard.press("3")
    page.keyboard.press("b")
    _set_brush(page, 5)
    paint_at = _press(page, 81.2, 68.7)
    page.wait_for_function("document.getElementById('stage').dataset.objects === '2,3,4'")
    page.click("#save-ref")
    page.wait_for_selector(".toast-success")

    expected = prediction.copy()
    expected[prediction == 1] = 4
    expected[_disc(*erase_at, 6) & (expected == 2)] = 0
    expected[_disc(*paint_at, 5)] = 3
    saved = _read(folder / "ref_masks" / "beetle_1.png")
    np.testing.assert_array_equal(saved, expected)
    assert page.get_attribute("#stage", "data-source") == "ref"
    page.wait_for_selector('#ref-list li[data-pk="beetle_1"] .badge:text-is("saved")')
    # The frame is a reference now, not also a prediction.
    beetle = next(g for g in app["api"].list_groups(pid) if g["key"] == app["beetle"])
    assert (beetle["refs"], beetle["preds"]) == (1, 0)
    assert page.errors == []


def test_counts_never_count_a_frame_twice(page, app):
    folder, pid, api = app["folder"], app["pid"], app["api"]
    one = np.zeros((H, W), dtype=np.uint8)
    one[20:70, 20:80] = 1
    old = 1_700_000_000
    masks.write_mask(folder / "ref_masks" / "beetle_0.png", one)
    os.utime(folder / "ref_masks" / "beetle_0.png", (old, old))
    for pk in ("beetle_0", "beetle_1", "beetle_2"):  # beetle_0: a leftover prediction
        masks.write_mask(folder / "pred_masks" / f"{pk}.png", one)
        os.utime(folder / "pred_masks" / f"{pk}.png", (old + 10, old + 10))

    def expect(refs: int, preds: int, stale: int, percent: int) -> None:
        page.goto(f"{app['url']}#/p/{quote(pid, safe='')}")
        row = page.locator(f'tr[data-group="{app["beetle"]}"]')
        row.wait_for()
        cells = row.locator("td")
        assert cells.nth(2).inner_text() == str(refs)
        assert cells.nth(3).inner_text().split()[0] == str(preds)
        assert (f"{stale} stale" in cells.nth(3).inner_text()) == bool(stale)
        # Stale predictions are masks the screens show (marked stale): they count, once.
        assert row.locator(".progress").get_attribute("aria-valuenow") == str(
            round(100 * (refs + preds) / 3)
        )
        page.goto(app["url"] + "#/")
        card = page.locator(f'[data-project-id="{pid}"]')
        card.wait_for()
        assert f"{percent}% of images have a mask" in card.inner_text()
        assert (f"({stale} stale)" in card.inner_text()) == bool(stale)

    # 6 images: beetle_0 is a reference (its old prediction file does not count), 2 predictions.
    expect(refs=1, preds=2, stale=0, percent=50)
    # Use beetle_1's prediction as a reference: the viewer asks first and says what happens.
    page.goto(
        f"{app['url']}#/p/{quote(pid, safe='')}/view/{quote(app['beetle'], safe='')}/beetle_1"
    )
    page.click("#use-as-reference")
    dialog = page.locator("dialog[open]")
    assert "no longer as a prediction" in dialog.inner_text()
    assert "stale" in dialog.inner_text()
    page.click("dialog[open] button[data-action='confirm-use']")
    page.wait_for_selector(".toast-success:has-text('is now a reference')")
    # 2 references, beetle_2's prediction is older than the new reference: still a mask on
    # every screen, marked stale (the next run predicts it again).
    expect(refs=2, preds=1, stale=1, percent=50)
    assert api.list_groups(pid)[0]["stale"] == 1
    page.goto(f"{app['url']}#/p/{quote(pid, safe='')}/run/{quote(app['beetle'], safe='')}")
    page.wait_for_selector("#start-run")
    assert "1 image to predict" in page.inner_text("#view")
    page.goto(
        f"{app['url']}#/p/{quote(pid, safe='')}/view/{quote(app['beetle'], safe='')}/beetle_2"
    )
    page.wait_for_selector(".single-head .badge-stale")
    assert page.errors == []


def test_a_reload_during_generation_shows_the_job_and_can_cancel_it(page, app):
    api, pid = app["api"], app["pid"]
    one = np.zeros((H, W), dtype=np.uint8)
    one[20:70, 20:80] = 1
    masks.write_mask(app["folder"] / "ref_masks" / "beetle_1.png", one)  # so Start can start
    _open_label(page, app, "beetle_0", "none")
    page.click("#cand-params summary")
    candidate_settings(page, {"points_per_side": "128"})  # slow on purpose
    page.click("#generate")
    page.wait_for_selector("#cancel-candidates")
    # Past the model load: the job is generating (its progress counts steps).
    page.wait_for_function(STEPS_SHOWN, timeout=MODEL_TIMEOUT_MS)
    page.reload()
    # After the reload: the job bar shows the running job, and the label screen follows it.
    chip = page.locator('.job-chip[data-kind="candidates"]')
    chip.wait_for()
    assert "beetle_0" in chip.inner_text()
    page.wait_for_selector("#cand-progress:not(.hidden) #cancel-candidates")
    # A run started meanwhile waits for it; "Run all groups" is off, saying why.
    run = api.start_run(pid, None, {})["job_id"]
    page.goto(f"{app['url']}#/p/{quote(pid, safe='')}")
    page.wait_for_selector("#run-all.disabled")
    assert "is going" in page.inner_text("#run-note")
    assert page.locator(".job-chip").count() == 2
    page.goto(f"{app['url']}#/p/{quote(pid, safe='')}/run")
    page.wait_for_selector("#run-note:not(.hidden)")
    assert page.is_disabled("#start-run")
    page.click(f'.job-chip[data-job-id="{run}"] button')
    page.wait_for_selector("#start-run:not([disabled])")
    page.click('.job-chip[data-kind="candidates"] button')
    page.wait_for_selector("#job-bar.hidden", state="attached")
    assert api.list_jobs(pid) == []
    assert [j["state"] for j in (api.job_status(run),)] == ["cancelled"]
    assert page.errors == []


def test_the_label_canvas_refits_when_the_window_resizes(page, app):
    masks.write_mask(app["folder"] / "ref_masks" / "beetle_0.png", _two_objects())
    _open_label(page, app, "beetle_0", "ref")
    scale = "Number(document.querySelector('#stage canvas').dataset.scale)"
    before = page.evaluate(scale)
    page.set_viewport_size({"width": 1000, "height": 640})
    page.wait_for_function(f"{scale} < {before} * 0.9")
    fitted = page.evaluate(scale)
    # The whole image is in view after the refit.
    box = page.locator("#stage canvas").bounding_box()
    assert W * fitted <= box["width"] and H * fitted <= box["height"]
    # Once the user zooms, a resize keeps the zoom.
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"{scale} > {fitted} * 1.2")
    zoomed = page.evaluate(scale)
    page.set_viewport_size({"width": 1200, "height": 760})
    page.wait_for_function(
        "document.querySelector('#stage canvas').getBoundingClientRect().width > 600"
    )
    assert page.evaluate(scale) == zoomed
    page.keyboard.press("f")  # F fits again, and resizing refits from then on
    page.set_viewport_size({"width": 1360, "height": 860})
    page.wait_for_function(f"{scale} > {fitted} * 1.1 && {scale} < {zoomed}")
    assert page.errors == []
