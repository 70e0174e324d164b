"""The whole flow in Debian's chromium against `sst-desktop --serve`: create a project from a CSV,
sample and label references, propagate, and see the results; plus the token and path guards."""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests._browser_helpers import (
    POINT_IN_MASK_JS,
    ServeProcess,
    candidate_settings,
    chromium_page,
    create_specimen_project,
    in_process_server,
    make_specimens,
    shot,
)

pytestmark = pytest.mark.browser

# Model work on a shared CPU is slow; UI waits are generous, the test has no timing assertions.
MODEL_TIMEOUT_MS = 240_000


@pytest.fixture
def server():
    srv = ServeProcess()
    yield srv
    srv.stop()


@pytest.fixture
def page(request):
    with chromium_page(request) as pg:
        yield pg


def _status(url: str, method: str = "GET", data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _ids(path: Path) -> set[int]:
    return {int(v) for v in np.unique(np.asarray(Image.open(path)))} - {0}


# The HTTP status of a same-origin GET with the page's token.
FETCH_STATUS_JS = """async (u) => (await fetch(u + (u.includes('?') ? '&' : '?') + 'token='
  + sessionStorage.getItem('sst_token'), {credentials: 'omit'})).status"""


def _wait_or_error(page, condition: str) -> None:
    """Wait for a JS condition; fail at once with the UI's message if an error toast appears."""
    page.wait_for_function(
        f"() => ({condition}) || document.querySelector('.toast-error')", timeout=MODEL_TIMEOUT_MS
    )
    errors = page.locator(".toast-error")
    assert errors.count() == 0, errors.first.inner_text()


def _objects(page) -> list[int]:
    """The object IDs the label screen holds (its #stage data-objects)."""
    text = page.get_attribute("#stage", "data-objects")
    return [int(v) for v in text.split(",")] if text else []


def _label_one(page, current_id: int, exclude: list[int]) -> dict:
    """Pick a free ID with its number key, then click a candidate not added yet: a new object."""
    page.locator("#stage canvas").focus()
    page.keyboard.press(str(current_id))
    target = page.evaluate(POINT_IN_MASK_JS, exclude)
    assert target is not None, "no candidate mask to click"
    page.mouse.click(target["x"], target["y"])
    page.wait_for_function(
        f"document.getElementById('stage').dataset.objects.split(',').includes('{current_id}')"
    )
    assert page.get_attribute("#stage", "data-selected") == str(current_id)
    return target


def test_full_flow_in_browser(server, page, tmp_path, sam2_checkpoint):
    data = tmp_path / "data"
    csv_path = make_specimens(data)
    project_folder = tmp_path / "project"

    # --- projects (with the sample project; "#/": the list, not the first-launch landing) ---
    page.goto(server.url + "#/")
    page.wait_for_selector("#new-project")
    shot(page, "01-projects")

    # --- new project: upload the CSV, build the image template from column chips, validate ---
    page.click("#new-project")
    page.set_input_files("#f-csv-file", str(csv_path))
    page.wait_for_selector("#csv-table")
    assert page.locator("#csv-table tbody tr").count() == 6
    page.select_option("#f-pk", "specimen")
    page.fill("#f-img-path", "photos/")
    page.click('#column-chips button:text-is("{specimen}")')
    page.keyboard.type(".png")
    assert page.input_value("#f-img-path") == "photos/{specimen}.png"
    (data / "elsewhere").mkdir()
    page.fill("#f-image-root", str(data / "elsewhere"))
    page.check('#f-group-by input[value="taxon"]')
    # A wrong image root: validation reports the missing images with an example.
    page.wait_for_selector('#validation-facts dd[data-fact="Images missing"]:text-is("6")')
    assert "beetle_0.png" in page.inner_text("#validation")
    assert page.is_disabled("#create-project")
    page.fill("#f-image-root", str(data))
    page.click("#advanced summary")
    page.select_option("#f-variant", "sam2.1_hiera_tiny")
    page.fill("#f-checkpoint", str(sam2_checkpoint))
    page.fill("#f-image-size", "256")
    page.select_option("#f-device", "cpu")
    page.fill("#f-folder", str(project_folder))
    page.fill("#f-name", "Browser test")
    page.wait_for_selector("#validation-ok")
    assert page.inner_text('#validation-facts dd[data-fact="Images found"]') == "6"
    assert page.inner_text('#validation-facts dd[data-fact="Groups"]').startswith("2")
    shot(page, "02-new-project")
    page.click("#create-project")

    # --- groups ---
    page.wait_for_url(re.compile(r"#/p/[^/]+$"))
    project_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("tr[data-group]")
    assert page.locator("tr[data-group]").count() == 2
    page.fill("#group-search", "moth")
    assert page.locator("tr[data-group]").count() == 1
    page.fill("#group-search", "")
    page.select_option("#group-filter", "needs-refs")
    assert page.locator("tr[data-group]").count() == 2
    page.select_option("#group-filter", "all")
    shot(page, "03-groups")
    beetle = page.locator("tr[data-group]", has_text="beetle")
    beetle_key = quote(beetle.get_attribute("data-group"), safe="")
    beetle.locator("a", has_text="Label").click()

    # --- label: sample a reference, generate candidates, label two masks, undo/redo, save ---
    page.wait_for_selector("#sample-refs")
    page.fill("#sample-n", "1")
    page.fill("#sample-seed", "0")
    page.click("#sample-refs")
    page.wait_for_selector("#ref-list li[data-pk]")
    assert page.locator("#ref-list li[data-pk]").count() == 1
    ref_pk = page.get_attribute("#ref-list li[data-pk]", "data-pk")
    page.wait_for_selector(f'#stage[data-pk="{ref_pk}"]')
    page.wait_for_function("() => !document.querySelector('#generate').disabled")
    shot(page, "04-label-empty")
    # Random weights: keep every candidate, and a coarse point grid keeps the CPU work small.
    page.click("#cand-params summary")
    settings = {
        "points_per_side": "4",
        "pred_iou_thresh": "0",
        "stability_score_thresh": "0",
        "box_nms_thresh": "1",
    }
    candidate_settings(page, settings)
    page.click("#generate")
    _wait_or_error(
        page,
        "Number(document.getElementById('stage').dataset.masks) > 0 && !document.querySelector('#generate').disabled",
    )
    # Zoom with the wheel, pan with space+drag, F fits again.
    canvas = page.locator("#stage canvas")
    fitted = float(canvas.get_attribute("data-scale"))
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    page.wait_for_function(
        f"() => Number(document.querySelector('#stage canvas').dataset.scale) > {fitted * 1.2}"
    )
    tx = float(canvas.get_attribute("data-tx"))
    canvas.focus()
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    page.wait_for_function(
        f"() => Number(document.querySelector('#stage canvas').dataset.tx) > {tx + 30}"
    )
    assert _objects(page) == []  # panning is not a click
    page.keyboard.press("f")
    page.wait_for_function(
        f"() => Math.abs(Number(document.querySelector('#stage canvas').dataset.scale) - {fitted}) < 1e-6"
    )

    first = _label_one(page, 1, [])
    _label_one(page, 2, [first["index"]])
    shot(page, "05-label-selected")
    assert _objects(page) == [1, 2]
    assert "Unsaved" in page.inner_text("#unsaved")
    page.keyboard.press("Control+z")
    assert _objects(page) == [1]
    page.keyboard.press("Control+Shift+z")
    assert _objects(page) == [1, 2]
    # Delete removes the selected object (2); undo brings it back.
    page.keyboard.press("Delete")
    assert _objects(page) == [1]
    page.keyboard.press("Control+z")
    assert _objects(page) == [1, 2]

    page.click("#save-ref")
    page.wait_for_selector(f'#ref-list li[data-pk="{ref_pk}"] .badge:text-is("saved")')
    ref_file = project_folder / "ref_masks" / f"{ref_pk}.png"
    assert ref_file.is_file()
    saved_ids = _ids(ref_file)
    assert saved_ids and saved_ids <= {1, 2}
    assert Image.open(ref_file).mode == "L"
    assert Image.open(ref_file).size == (160, 120)

    # Reopening shows the saved reference with its IDs.
    page.reload()
    page.wait_for_selector(f'#stage[data-pk="{ref_pk}"][data-source="ref"]')
    assert set(_objects(page)) == saved_ids
    assert page.inner_text("#unsaved") == "Saved"
    shot(page, "07-label-reopened")

    # Leaving with unsaved changes asks first; Cancel stays on the labeller.
    page.fill("#objects li[data-id] input >> nth=0", "5")
    page.locator("#objects li[data-id] input >> nth=0").dispatch_event("change")
    page.wait_for_selector("#unsaved.is-dirty")
    page.click(".crumbs a:text-is('Browser test')")
    page.wait_for_selector("dialog[open]:has-text('Save changes')")
    page.click("dialog[open] button:text-is('Cancel')")
    assert "/label/" in page.url
    page.click(".crumbs a:text-is('Browser test')")
    page.click("dialog[open] button:text-is('Discard')")
    page.wait_for_selector("#run-all")
    assert _ids(ref_file) == saved_ids  # discarded edits never reach the file

    # --- the run screen for all groups, not started ---
    page.click("#run-all")
    page.wait_for_selector("#start-run")
    assert "1 group without references will be skipped" in page.inner_text("#view")
    assert page.is_enabled("#start-run")

    # --- run propagation for the group ---
    page.goto(f"{server.base}/#/p/{project_id}/run/{beetle_key}")
    page.wait_for_selector("#start-run")
    page.click("#start-run")
    page.wait_for_selector("#run-state:text-is('done')", timeout=MODEL_TIMEOUT_MS)
    page.wait_for_selector("#run-results .thumb-predicted")
    shot(page, "08-run-done")
    others = [f"beetle_{i}" for i in range(3) if f"beetle_{i}" != ref_pk]
    for pk in others:
        pred = project_folder / "pred_masks" / f"{pk}.png"
        assert pred.is_file(), f"no prediction for {pk}"
        assert Image.open(pred).size == (160, 120)
    assert not (project_folder / "pred_masks" / f"{ref_pk}.png").exists()
    assert page.locator("#run-results .thumb-predicted").count() == len(others)

    # --- viewer: grid, single view, keyboard, opacity, use as reference ---
    page.goto(f"{server.base}/#/p/{project_id}/view/{beetle_key}")
    page.wait_for_selector("#viewer-grid .thumb")
    assert page.locator("#viewer-grid .thumb").count() == 3
    page.select_option("#view-source", "pred")
    assert page.locator("#viewer-grid .thumb").count() == len(others)
    shot(page, "09-viewer-grid")
    page.locator("#viewer-grid .thumb").first.click()
    page.wait_for_selector("#single-mask", state="attached")
    page.wait_for_function("() => document.getElementById('single-mask').naturalWidth === 160")
    page.fill("#view-opacity", "0.8")
    page.locator("#view-opacity").dispatch_event("input")
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => location.hash.endsWith('{others[-1]}')")
    shot(page, "10-viewer-single")
    page.click("#use-as-reference")
    page.click("dialog[open] button[data-action='confirm-use']")
    target_ref = project_folder / "ref_masks" / f"{others[-1]}.png"
    page.wait_for_selector(".toast-success:has-text('is now a reference')")
    assert target_ref.is_file()
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer-grid")

    # --- an image outside the project cannot be fetched, even with the token and a real project ---
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    for url in (
        f"/image/{project_id}/{quote(str(secret), safe='')}",
        f"/image/{project_id}/..%2F..%2Fsecret.png",
        f"/thumb/{project_id}/{quote(str(secret), safe='')}",
        f"/mask/{project_id}/ref/..%2F..%2Fsecret.png",
    ):
        status = page.evaluate(FETCH_STATUS_JS, url)
        assert status in (400, 403, 404), f"{url} gave {status}"
    assert page.evaluate(FETCH_STATUS_JS, f"/image/{project_id}/{ref_pk}") == 200

    # --- the projects list shows progress ---
    page.goto(server.url + "#/")
    card = page.locator(f'[data-project-id="{project_id}"]')
    card.wait_for()
    assert "Browser test" in card.inner_text()
    shot(page, "11-projects-after")
    assert page.errors == []


def test_token_and_paths_are_guarded(server, page, tmp_path):
    # Without the token: the page, the API and files are refused.
    assert _status(server.base + "/") in (401, 403)
    assert _status(server.base + "/api/list_projects", "POST", b'{"args": []}') in (401, 403)
    assert _status(server.base + "/js/app.js") in (401, 403)
    wrong = server.url.replace(server.token, "x" + server.token[1:])
    assert _status(wrong) in (401, 403)

    # With it, in the browser: the UI loads, but an image outside any project cannot be fetched.
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    page.goto(server.url + "#/")
    page.wait_for_selector("#new-project")
    for url in (
        f"/image/nope/{secret}",
        "/image/nope/..%2F..%2F..%2Fetc%2Fpasswd",
        "/ui/../../../etc/passwd",
        "/mask/nope/ref/..%2F..%2Fsecret.png",
    ):
        status = page.evaluate(FETCH_STATUS_JS, url)
        assert status in (400, 403, 404), f"{url} gave {status}"
    # A request without the token from a page that has no cookie is refused too.
    fresh = page.context.browser.new_context()
    other = fresh.new_page()
    response = other.goto(server.base + "/")
    assert response.status in (401, 403)
    fresh.close()
    assert page.errors == []


def test_first_launch_opens_the_sample_project_and_later_launches_the_list(page):
    from sst_desktop.data import registry

    first = ServeProcess()
    try:
        # A fresh data dir and a URL without a route: the app lands in the sample's groups.
        page.goto(first.url)
        page.wait_for_url(re.compile(r"#/p/[^/]+$"))
        page.wait_for_selector("tr[data-group]")
        (sample,) = registry.list_projects()
        assert page.url.endswith("#/p/" + quote(sample["id"], safe=""))
        assert page.locator("tr[data-group]").count() >= 2
        shot(page, "00-first-launch")
        # The projects list is one click away, through the breadcrumbs.
        page.click('#crumbs a:text-is("Projects")')
        page.wait_for_selector(f'[data-project-id="{sample["id"]}"]')
        assert page.url.endswith("#/")
        # A reload of the bare URL in the same launch: the list (the landing happens once).
        page.goto(first.url)
        page.wait_for_selector(f'[data-project-id="{sample["id"]}"]')
        assert "#/p/" not in page.url
    finally:
        first.stop()
    # The next launch on the same data dir created no sample: it opens on the projects list.
    second = ServeProcess()
    try:
        page.goto(second.url)
        page.wait_for_selector(f'[data-project-id="{sample["id"]}"]')
        assert "#/p/" not in page.url
        assert len(registry.list_projects()) == 1
        assert page.errors == []
    finally:
        second.stop()


def _in_process_server(view: list[str] | None = None):
    """A real bottle server in this process (for `--view`, which opens a window, not --serve)."""
    return in_process_server(view=view)


def _create_project(tmp_path: Path, **overrides) -> tuple[dict, Path]:
    return create_specimen_project(tmp_path, overrides.pop("name", "View test"), **overrides)


def test_view_mode_opens_the_given_masks(page, tmp_path):
    from sst_desktop.data import masks

    summary, folder = _create_project(tmp_path)
    mask = np.zeros((120, 160), dtype=np.uint8)
    mask[20:70, 20:80] = 1
    mask[80:105, 90:130] = 2
    pred = folder / "pred_masks" / "moth_1.png"
    masks.write_mask(pred, mask)
    api, running = _in_process_server(view=[str(pred)])
    try:
        page.goto(running.url + "#/view")
        page.wait_for_selector("#single-mask", state="attached")
        page.wait_for_function("() => document.getElementById('single-mask').naturalWidth === 160")
        assert "moth_1" in page.inner_text(".single-head")
        # The coloured overlay uses the palette: ID 1's colour where the mask is 1, clear where 0.
        rgba = page.evaluate(
            """async () => {
              const img = document.getElementById('single-mask');
              const c = document.createElement('canvas'); c.width = 160; c.height = 120;
              const g = c.getContext('2d'); g.drawImage(img, 0, 0);
              return [Array.from(g.getImageData(40, 40, 1, 1).data), Array.from(g.getImageData(5, 5, 1, 1).data)];
            }"""
        )
        palette = page.evaluate(
            "async () => (await (await import('/js/transport.js')).call('app_info')).palette"
        )
        inside, outside = rgba
        expected = bytes.fromhex(palette[1].lstrip("#"))
        assert inside[3] > 0 and all(
            abs(a - b) <= 3 for a, b in zip(inside[:3], expected, strict=True)
        ), inside
        assert outside[3] == 0
        shot(page, "12-view-mode")
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer-grid .thumb")
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_delete_project_asks_first(page, tmp_path):
    summary, folder = _create_project(tmp_path)
    api, running = _in_process_server()
    try:
        page.goto(running.url)
        card = page.locator(f'[data-project-id="{summary["id"]}"]')
        card.wait_for()
        # Cancel keeps it.
        card.locator("button", has_text="Delete").click()
        page.wait_for_selector("dialog[open]")
        shot(page, "13-delete-dialog")
        page.click("dialog[open] button:text-is('Cancel')")
        assert card.count() == 1
        # Confirm without "delete files": gone from the list, the folder stays.
        card.locator("button", has_text="Delete").click()
        page.click("dialog[open] [data-action='confirm-delete']")
        card.wait_for(state="detached")
        assert (folder / "spec.json").is_file() or any(folder.iterdir())
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_project_settings_dialog_switches_the_model(page, tmp_path, sam2_checkpoint):
    # Like the sample project: created for the large model at 1024 px. The user switches it to the
    # tiny checkpoint at 256 px from the groups screen, without touching spec.json.
    from sst_desktop.data.spec import load_spec

    summary, folder = _create_project(tmp_path, sam2="sam2.1_hiera_large", image_size=1024)
    api, running = _in_process_server()
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(running.url)
        # A newcomer clicks the project's name (not only "Open") to get in.
        page.click(f'[data-project-id="{summary["id"]}"] h2 a')
        page.click("#project-settings")
        page.wait_for_selector("dialog[open] #s-variant")
        assert page.input_value("#s-variant") == "sam2.1_hiera_large"
        assert page.input_value("#s-image-size") == "1024"
        # The tiny checkpoint for the large variant: the error says so in words, inside the
        # dialog next to the checkpoint field (not a toast behind the backdrop).
        page.fill("#s-checkpoint", str(sam2_checkpoint))
        page.click("dialog[open] [data-action='save-settings']")
        error = page.locator("dialog[open] [data-error-for='checkpoint']")
        page.wait_for_function(
            "() => document.querySelector(\"dialog[open] [data-error-for='checkpoint']\").textContent"
        )
        assert "is SAM 2.1 tiny; the project uses SAM 2.1 large" in error.inner_text()
        assert "weights" not in error.inner_text()
        assert page.locator(".toast-error").count() == 0
        # Fixing it (the variant) clears the message.
        page.select_option("#s-variant", "sam2.1_hiera_tiny")
        assert error.inner_text() == ""
        page.fill("#s-image-size", "250")
        page.click("dialog[open] [data-action='save-settings']")
        # A bad value: the error shows next to its field; the dialog keeps what was typed.
        size_error = page.locator("dialog[open] [data-error-for='image_size']")
        page.wait_for_function(
            "() => document.querySelector(\"dialog[open] [data-error-for='image_size']\").textContent"
        )
        assert "multiple of 32" in size_error.inner_text()
        assert page.locator(".toast-error").count() == 0
        assert page.input_value("#s-checkpoint") == str(sam2_checkpoint)
        assert page.input_value("#s-variant") == "sam2.1_hiera_tiny"
        assert load_spec(folder / "spec.json").image_size == 1024  # nothing saved yet
        page.fill("#s-image-size", "256")
        assert size_error.inner_text() == ""
        page.select_option("#s-device", "cpu")
        shot(page, "14-project-settings")
        page.click("dialog[open] [data-action='save-settings']")
        page.wait_for_selector("dialog[open]", state="detached")
        page.wait_for_selector(".toast-success")
        spec = load_spec(folder / "spec.json")
        assert (spec.sam2, spec.image_size, spec.device) == ("sam2.1_hiera_tiny", 256, "cpu")
        assert spec.checkpoint == Path(sam2_checkpoint).absolute()

        # On a 1280 px window every label tool stays visible: the toolbar wraps, never scrolls.
        page.click("tr[data-group] a.btn:text-is('Label')")
        toolbar = page.locator(".stage-toolbar")
        toolbar.wait_for()
        # ... and a sampled reference shows its whole key in the side panel.
        page.fill("#sample-n", "1")
        page.click("#sample-refs")
        ref = page.locator("#ref-list li[data-pk] .ref-pk")
        ref.wait_for()
        assert ref.evaluate("el => el.scrollWidth <= el.clientWidth"), "reference key cut off"
        assert toolbar.evaluate("el => el.scrollWidth <= el.clientWidth")
        box = toolbar.bounding_box()
        for sel in ("#generate", "#save-ref", "#next-ref"):
            b = page.locator(sel).bounding_box()
            assert box["x"] <= b["x"] and b["x"] + b["width"] <= box["x"] + box["width"], sel
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_flagged_filter_and_readable_tiles(page, tmp_path):
    # A previous run's summary under runs/ flagged one prediction (as the runner writes it); the
    # groups filter and the viewer's "Flagged only" must find it, and each tile must show the whole
    # primary key and the reason, not "beet…" and "flag".
    import json

    from sst_desktop.data import masks

    summary, folder = _create_project(tmp_path)
    h, w = 120, 160
    m = np.zeros((h, w), np.uint8)
    m[20:70, 20:80] = 1
    masks.write_mask(folder / "ref_masks" / "beetle_0.png", m)
    masks.write_mask(folder / "pred_masks" / "beetle_1.png", m)
    masks.write_mask(folder / "pred_masks" / "beetle_2.png", np.zeros_like(m))
    (folder / "runs").mkdir(exist_ok=True)
    (folder / "runs" / "20260101T000000.000000Z.json").write_text(
        json.dumps(
            {
                "written_pks": ["beetle_1", "beetle_2"],
                "flagged": [{"pk": "beetle_2", "reasons": ["empty"]}],
            }
        )
    )
    api, running = _in_process_server()
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(f"{running.url}#/p/{quote(summary['id'], safe='')}")
        page.select_option("#group-filter", "flagged")
        rows = page.locator("tr[data-group]")
        assert rows.count() == 1 and rows.first.locator(".group-values").inner_text() == "beetle"
        rows.first.locator("a.btn:text-is('View')").click()
        page.wait_for_selector("#viewer-grid .thumb")
        assert page.locator("#viewer-grid .thumb").count() == 3
        page.check("#view-flagged")
        tiles = page.locator("#viewer-grid .thumb")
        assert tiles.count() == 1
        tile = tiles.first
        assert tile.get_attribute("data-pk") == "beetle_2"
        assert tile.locator(".badge-flag").inner_text() == "empty"
        name = tile.locator(".thumb-label .ellipsis")
        assert name.inner_text() == "beetle_2"
        assert name.evaluate("el => el.scrollWidth <= el.clientWidth"), "primary key cut off"
        shot(page, "15-viewer-flagged")
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


# The same UI inside the real pywebview Qt window: the transport must use the JS bridge there.
WINDOW_PROBE = """
import json, sys
from sst_desktop.app.window import run_app
from sst_desktop.app.window_probe import wait_js

def probe(window, api):
    result = {}
    try:
        window.events.shown.wait(60)
        result["screen"] = wait_js(window, "document.querySelector('tr[data-group]') ? 'groups' : ''")
        result["hash"] = window.evaluate_js("location.hash")
        result["sample_id"] = [p["id"] for p in api.list_projects()]
        result["badge"] = window.evaluate_js("document.getElementById('mode-badge').textContent")
        window.evaluate_js(
            "window.__t = null; import(location.origin + '/js/transport.js').then(async (m) => {"
            " const info = await m.call('app_info');"
            " let err = ''; try { await m.call('list_groups', 'no-such-project'); } catch (e) { err = e.message; }"
            " window.__t = {inWindow: m.inWindow(), mode: info.mode, err}; }); null"
        )
        result["transport"] = wait_js(window, "window.__t")
    except Exception as exc:
        result["exception"] = repr(exc)
    finally:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
        window.destroy()

sys.exit(run_app(_probe=probe))
"""


@pytest.mark.gui
def test_ui_runs_in_the_window_through_the_bridge(tmp_path):
    import json
    import os
    import subprocess
    import sys

    if not shutil.which("xvfb-run") and not os.environ.get("DISPLAY"):
        pytest.skip("needs xvfb-run or a display")
    script = tmp_path / "probe.py"
    script.write_text(WINDOW_PROBE)
    out = tmp_path / "probe.json"
    env = dict(os.environ)
    env.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    env.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu")
    cmd = [sys.executable, str(script), str(out)]
    if not os.environ.get("DISPLAY"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1400x1000x24", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert out.is_file(), proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert "exception" not in result, result
    # A fresh data dir: the window lands in the sample project this launch created.
    assert result["screen"] == "groups"
    assert len(result["sample_id"]) == 1
    assert result["hash"] == "#/p/" + quote(result["sample_id"][0], safe="")
    assert result["badge"] == ""
    assert result["transport"]["inWindow"] is True
    assert result["transport"]["mode"] == "window"
    assert "no-such-project" in result["transport"]["err"]


def test_candidate_generation_can_be_cancelled(page, tmp_path, sam2_checkpoint):
    # On a CPU generation takes minutes: the overlay's Cancel stops it, and so does leaving.
    import time

    summary, _ = _create_project(tmp_path, checkpoint=str(sam2_checkpoint))
    api, running = _in_process_server()
    pid = summary["id"]
    try:
        group = api.list_groups(pid)[0]["key"]
        page.goto(f"{running.url}#/p/{quote(pid, safe='')}/label/{quote(group, safe='')}/beetle_0")
        page.wait_for_function("document.querySelector('#stage')?.dataset.pk === 'beetle_0'")
        page.wait_for_selector("#generate:not([disabled])")
        page.click("#cand-params summary")
        candidate_settings(page, {"points_per_side": "256"})  # minutes of work: never done first
        page.click("#generate")
        page.click("#cancel-candidates")
        page.wait_for_selector(
            ".toast:has-text('Candidate generation cancelled')", timeout=MODEL_TIMEOUT_MS
        )
        assert page.locator("#cand-progress").evaluate("el => el.classList.contains('hidden')")
        assert api.list_jobs(pid) == []
        # Candidates found before the cancel stay, on the screen as in the session.
        shown = int(page.get_attribute("#stage", "data-masks"))
        assert shown == len(api.open_frame(pid, "beetle_0")["masks"])

        page.click("#generate")
        page.wait_for_selector("#cancel-candidates:not([disabled])")
        # Leaving the label screen keeps the job; the job bar shows it and cancels it.
        page.goto(f"{running.url}#/p/{quote(pid, safe='')}")
        button = page.locator('.job-chip[data-kind="candidates"] button')
        button.wait_for()
        # The bar polls every second: its Cancel button stays the same element across polls,
        # also when the bar still showed the first generation's chip here (it had ended since
        # the bar's last poll) and hands it to the second one.
        first = button.element_handle()
        page.wait_for_function(
            "() => { const el = document.querySelector('.job-chip[data-kind=candidates] .job-count');"
            " return el && el.textContent !== window.__chipText && (window.__chipText = el.textContent)"
            " && (window.__chipPolls = (window.__chipPolls || 0) + 1) >= 3; }",
            polling=200,
            timeout=MODEL_TIMEOUT_MS,
        )
        assert first.evaluate("el => el.isConnected")
        button.click()
        deadline = time.monotonic() + MODEL_TIMEOUT_MS / 1000
        while api.list_jobs(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.list_jobs(pid) == []
        page.wait_for_selector("#job-bar.hidden", state="attached")
        states = [j.state for j in api._jobs.jobs(kind="candidates")]
        assert states == ["cancelled", "cancelled"]
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_a_large_group_opens_without_fetching_every_thumbnail(page, tmp_path):
    # 400 images in one group, all predicted: the viewer and run grids build a page of tiles and
    # fetch only their thumbnails; more are built as the user scrolls.
    import csv

    from sst_desktop.app.api import Api
    from sst_desktop.data import masks

    n = 400
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    img = Image.fromarray(np.full((24, 32, 3), 200, np.uint8))
    m = np.zeros((24, 32), np.uint8)
    m[4:20, 6:26] = 1
    with (tmp_path / "data" / "big.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["specimen", "taxon"])
        for i in range(n):
            img.save(photos / f"s{i}.png")
            writer.writerow([f"s{i}", "moth"])
    summary = Api(mode="browser").create_project(
        {
            "name": "Big group",
            "csv": str(tmp_path / "data" / "big.csv"),
            "primary_key": "specimen",
            "img_path": "photos/{specimen}.png",
            "image_root": str(tmp_path / "data"),
            "group_by": ["taxon"],
            "sam2": "sam2.1_hiera_tiny",
            "mask_mode": "original",
            "device": "cpu",
            "image_size": 256,
            "folder": str(tmp_path / "project"),
        }
    )
    for i in range(n):
        masks.write_mask(tmp_path / "project" / "pred_masks" / f"s{i}.png", m)
    api, running = _in_process_server()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        pid = quote(summary["id"], safe="")
        group = quote(api.list_groups(summary["id"])[0]["key"], safe="")
        for screen, grid in (("view", "#viewer-grid"), ("run", "#run-results")):
            requests.clear()
            page.goto(f"{running.url}#/p/{pid}/{screen}/{group}")
            page.wait_for_selector(f"{grid} .thumb")
            page.wait_for_timeout(1500)  # let any eager loading happen
            tiles = page.locator(f"{grid} .thumb").count()
            thumbs = sum("/thumb/" in u for u in requests)
            tile_masks = [u for u in requests if "/mask/" in u]
            assert 0 < tiles < n / 2, (screen, tiles)
            # (The second screen may find the first one's thumbnails in the browser's cache.)
            assert thumbs <= tiles and len(tile_masks) <= tiles, (screen, thumbs, tiles)
            assert thumbs > 0 or screen == "run"
            # Tile overlays are thumbnail-sized and outlined, not full-size masks.
            assert all("max=256" in u and "outline=1" in u for u in tile_masks)
            # Scrolling to the end of the grid builds the next page.
            for _ in range(3):
                page.evaluate("document.getElementById('view').scrollTop = 1e9")
                page.wait_for_timeout(300)
            assert page.locator(f"{grid} .thumb").count() > tiles, screen
        shot(page, "16-large-group-run")
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_new_project_live_check_shows_paths_of_an_sql_image_path(server, page, tmp_path):
    data = tmp_path / "data"
    csv_path = make_specimens(data)
    page.goto(server.url + "#/")
    page.click("#new-project")
    page.set_input_files("#f-csv-file", str(csv_path))
    page.wait_for_selector("#csv-table")
    page.select_option("#f-pk", "specimen")
    page.fill("#f-image-root", str(data))
    # An original SST-GUI expression: evaluated by the whitelist, its paths shown as resolved.
    page.fill("#f-img-path", "'photos/' || LOWER(specimen) || '.png'")
    page.wait_for_selector("#validation-ok")
    first = page.locator("#path-examples li").first.inner_text()
    assert first == str(data / "photos" / "beetle_0.png")
    assert page.inner_text('#validation-facts dd[data-fact="Images found"]') == "6"
    # Outside the whitelist: one line naming the function, and nothing can be created.
    page.fill("#f-img-path", "read_text('/etc/passwd')")
    page.wait_for_selector(".banner-error")
    assert "uses READ_TEXT, which SST Desktop does not evaluate" in page.inner_text(".banner-error")
    assert page.is_disabled("#create-project")
    assert page.errors == []


def test_original_sst_gui_folder_and_the_reference_scope_setting(page, tmp_path):
    # An original SST-GUI project opened as it is; Settings switches it to shared references and
    # the group without references of its own becomes runnable.
    from sst_desktop.data import registry
    from sst_desktop.data.spec import load_spec
    from tests.test_sstgui_compat import make_sstgui_folder

    spec = make_sstgui_folder(tmp_path)
    pid = registry.register(spec)["id"]
    api, running = _in_process_server()
    try:
        page.goto(f"{running.url}#/p/{quote(pid, safe='')}")
        danaus = page.locator("tr[data-group]").nth(1)
        danaus.wait_for()
        assert page.locator("tr[data-group]").count() == 2
        assert danaus.locator("td.num").nth(1).inner_text() == "none"
        page.click("#project-settings")
        page.wait_for_selector("dialog[open] #s-reference-scope")
        assert page.input_value("#s-reference-scope") == "group"
        page.select_option("#s-reference-scope", "all")
        page.click("dialog[open] [data-action='save-settings']")
        page.wait_for_selector("dialog[open]", state="detached")
        page.wait_for_selector("tr[data-group] .badge:text-is('shared')")
        assert load_spec(spec).reference_scope == "all"
        run = page.locator("tr[data-group]").nth(1).locator("a.btn:text-is('Run')")
        assert "btn-primary" in run.get_attribute("class")
        run.click()
        page.wait_for_selector("#run-summary")
        assert page.inner_text("#run-summary").startswith("1 group with references, 2 images")
        assert not page.is_disabled("#start-run")
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_a_refused_part_name_stays_typed_with_the_reason_beside_it(page, tmp_path):
    summary, folder = _create_project(tmp_path, name="Part names")
    api, running = _in_process_server()
    try:
        page.goto(f"{running.url}#/p/{quote(summary['id'], safe='')}")
        page.locator("tr[data-group]", has_text="beetle").locator("a", has_text="Label").click()
        page.wait_for_selector("#part-names", state="attached")
        page.locator("details.part-names-box summary").click()
        first, fourth = (
            page.locator('#part-names input[data-id="1"]'),
            page.locator('#part-names input[data-id="4"]'),
        )
        first.fill("body")
        first.dispatch_event("change")
        page.wait_for_selector(".toast:has-text('ID 1 is now')")
        fourth.fill("Body")
        fourth.dispatch_event("change")
        page.wait_for_selector("#part-names-error:not(:empty)")
        assert page.inner_text("#part-names-error") == (
            "Parts 1 and 4 are both named 'Body': give each part its own name."
        )
        # What the user typed is kept (marked) and nothing was saved for part 4.
        assert fourth.input_value() == "Body"
        assert fourth.get_attribute("aria-invalid") == "true"
        assert load_labels(folder) == {"1": "body"}
        # Another name fixes it: saved, and the message goes.
        fourth.fill("head")
        fourth.dispatch_event("change")
        page.wait_for_selector("#part-names-error:empty", state="attached")
        assert load_labels(folder) == {"1": "body", "4": "head"}
        assert fourth.get_attribute("aria-invalid") is None
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def load_labels(folder: Path) -> dict:
    """The part names saved in a project folder's spec.json."""
    import json

    return json.loads((folder / "spec.json").read_text(encoding="utf-8")).get("labels", {})
