"""What a new user meets, in Debian's chromium against a real server: new-project defaults, the
shortcuts list, group names, the Run header and Cancel message, and the viewer (M, legend, zoom)."""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests._browser_helpers import (
    chromium_page,
    create_specimen_project,
    in_process_server,
    shot,
    stop_in_process,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def page(request):
    with chromium_page(request) as pg:
        yield pg


@pytest.fixture
def served():
    """A real bottle server in this process (browser mode); stopped afterwards."""
    api, running = in_process_server()
    yield running
    stop_in_process(api, running)


def _create_project(tmp_path: Path, **overrides) -> tuple[dict, Path]:
    return create_specimen_project(tmp_path, overrides.pop("name", "First use"), **overrides)


def _master_csv(folder: Path) -> Path:
    """A 'master.csv' where Image_name (no extension, resolves to nothing) precedes filepath."""
    photos = folder / "photos"
    photos.mkdir(parents=True)
    rows = []
    for i in range(5):
        Image.new("RGB", (32, 24), (40 * i, 90, 120)).save(photos / f"s{i}.jpg")
        rows.append({"id": f"s{i}", "Image_name": f"IMG_{i:04d}", "filepath": f"photos/s{i}.jpg"})
    path = folder / "master.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "Image_name", "filepath"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _no_gpu() -> bool:
    return not Path("/proc/driver/nvidia").exists()


def test_new_project_defaults_that_work(page, served, tmp_path):
    _create_project(tmp_path / "other", name="beetles")
    csv_path = _master_csv(tmp_path / "beetles")
    page.goto(served.url + "#/new")
    page.fill("#f-csv", str(csv_path))
    page.dispatch_event("#f-csv", "change")
    page.wait_for_selector("#csv-table")
    # The image column is the one whose values are existing files, and the screen says why.
    page.wait_for_function(
        "() => document.getElementById('img-path-note').textContent.includes('Chose')"
    )
    assert page.input_value("#f-img-path") == "filepath"
    note = page.inner_text("#img-path-note")
    assert "5 of 5 existing images" in note and "Image_name: 0" in note, note
    page.wait_for_selector('#validation-facts dd[data-fact="Images found"]:text-is("5")')
    # The name comes from the folder ("master" says nothing), made unique against "beetles".
    assert page.input_value("#f-name") == "beetles 2"
    page.fill("#f-name", "Beetles")
    assert "already exists" in page.inner_text("#name-note")
    page.fill("#f-name", "Beetles 2026")
    assert page.inner_text("#name-note") == ""
    # No GPU here: a small variant is the default, with the reason in one line.
    if _no_gpu():
        assert page.input_value("#f-variant") in ("sam2.1_hiera_small", "sam2.1_hiera_tiny")
        assert "No GPU found" in page.inner_text("#variant-note")
    page.wait_for_selector("#validation-ok")
    assert not page.is_disabled("#create-project")
    shot(page, "firstuse-new-defaults")
    # The CSV path becomes invalid: Create is disabled at once and the stale "Ready" is gone.
    page.fill("#f-csv", str(tmp_path / "gone.csv"))
    assert page.is_disabled("#create-project")
    page.dispatch_event("#f-csv", "change")
    page.wait_for_selector("#validation .banner-error")
    assert page.locator("#validation-ok").count() == 0
    assert page.is_disabled("#create-project")
    assert page.errors == []


def test_uploaded_csv_asks_for_the_image_folder(page, served, tmp_path):
    csv_path = _master_csv(tmp_path / "beetles")
    page.goto(served.url + "#/new")
    page.set_input_files("#f-csv-file", str(csv_path))
    page.wait_for_selector("#csv-table")
    # The upload lives in an internal folder: the screen asks where the images are.
    page.wait_for_function(
        "() => document.getElementById('image-root-note').textContent.includes('folder')"
    )
    page.wait_for_selector("#validation .banner-warn:has-text('Enter the folder')")
    assert page.is_disabled("#create-project")
    page.fill("#f-image-root", str(tmp_path / "beetles"))
    page.dispatch_event("#f-image-root", "change")
    page.wait_for_function("() => document.getElementById('f-img-path').value === 'filepath'")
    page.wait_for_selector('#validation-facts dd[data-fact="Images found"]:text-is("5")')
    assert page.input_value("#f-name") == "master"  # an upload has no folder to name it after
    page.wait_for_selector("#validation-ok")
    assert not page.is_disabled("#create-project")
    assert page.errors == []


def test_shortcuts_list_every_key_in_full(page, served):
    page.goto(served.url + "#/")
    page.wait_for_selector("#new-project")
    page.keyboard.press("?")
    page.wait_for_selector("dialog[open] table.shortcuts")
    keys = page.eval_on_selector_all(
        "dialog[open] table.shortcuts kbd", "els => els.map((e) => e.textContent)"
    )
    for key in ("G", "S", "H", "Esc", "Delete / Backspace", "M", "F"):
        assert key in keys, (key, keys)
    # No description is cut off: every cell shows its whole text.
    cut = page.eval_on_selector_all(
        "dialog[open] table.shortcuts td",
        "els => els.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.textContent)",
    )
    assert cut == []
    box = page.locator("dialog[open]").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1360
    shot(page, "firstuse-shortcuts")
    assert page.errors == []


def test_group_names_show_values_and_the_run_header_counts(page, served, tmp_path):
    from sst_desktop.data import masks

    summary, folder = _create_project(tmp_path, group_by=["taxon", "site"])
    m = np.zeros((120, 160), np.uint8)
    m[20:70, 20:80] = 1
    # beetle/s0 holds beetle_0 and beetle_2: a reference and a prediction, nothing left to do.
    masks.write_mask(folder / "ref_masks" / "beetle_0.png", m)
    masks.write_mask(folder / "pred_masks" / "beetle_2.png", m)
    pid = quote(summary["id"], safe="")
    page.goto(f"{served.url}#/p/{pid}")
    row = page.locator("tr[data-group]").first
    row.wait_for()
    assert row.locator(".group-values").inner_text() == "beetle · s0"
    assert row.locator(".group-columns").inner_text() == "taxon · site"
    assert "=" not in row.locator("td").first.inner_text()
    key = quote(row.get_attribute("data-group") or "", safe="")
    # Search finds a group by its values.
    page.fill("#group-search", "moth")
    assert page.locator("tr[data-group]").count() == 2
    shot(page, "firstuse-group-names")

    page.goto(f"{served.url}#/p/{pid}/run/{key}")
    page.wait_for_selector("#run-summary")
    assert page.locator("h1").inner_text() == "Run · beetle · s0"
    text = page.inner_text("#run-summary")
    assert "0 images left to predict" in text and "Overwrite" in text, text
    page.check("#run-overwrite")
    assert "1 image to predict (existing predictions are redone)" in page.inner_text("#run-summary")
    assert page.inner_text("#run-stats").startswith("0 / 1")
    # The label and viewer screens name the group the same way in their breadcrumbs.
    for screen, prefix in (("label", "Label"), ("view", "Results")):
        page.goto(f"{served.url}#/p/{pid}/{screen}/{key}")
        crumb = page.locator(f"#crumbs :text-matches('^{prefix} ·')")
        crumb.wait_for()
        assert crumb.inner_text() == f"{prefix} · beetle · s0"
    assert page.errors == []


def test_cancel_says_what_it_waits_for(page, served, tmp_path, sam2_checkpoint):
    summary, folder = _create_project(tmp_path, checkpoint=str(sam2_checkpoint))
    from sst_desktop.data import masks

    m = np.zeros((120, 160), np.uint8)
    m[20:70, 20:80] = 1
    masks.write_mask(folder / "ref_masks" / "beetle_0.png", m)
    pid = quote(summary["id"], safe="")
    page.goto(f"{served.url}#/p/{pid}")
    key = page.locator("tr[data-group]").first.get_attribute("data-group")
    page.goto(f"{served.url}#/p/{pid}/run/{quote(key, safe='')}")
    page.fill("#run-batch", "2")
    page.click("#start-run")
    page.wait_for_selector("#cancel-run:not([disabled])")
    page.click("#cancel-run")
    message = page.inner_text("#run-message")
    assert (
        message.startswith("Cancelling: waiting for")
        and "masks already written are kept" in message
    )
    assert "batch of up to 2 images" in message or "model to finish loading" in message, message
    page.wait_for_function(
        "() => !document.getElementById('run-state').textContent.includes('running')",
        timeout=240_000,
    )
    assert page.errors == []


def _pixel(page, selector: str, x: float, y: float) -> list[int]:
    """RGBA of the stage canvas at page point (x, y)."""
    return page.evaluate(
        """([sel, x, y]) => {
          const c = document.querySelector(sel);
          const r = c.getBoundingClientRect();
          const k = c.width / r.width;
          return Array.from(c.getContext('2d').getImageData(Math.round((x - r.left) * k),
            Math.round((y - r.top) * k), 1, 1).data);
        }""",
        [selector, x, y],
    )


def test_viewer_m_key_legend_and_zoom(page, served, tmp_path):
    from sst_desktop.data import masks

    summary, folder = _create_project(tmp_path)
    pred = np.zeros((120, 160), np.uint8)
    pred[20:70, 20:80] = 1
    pred[80:105, 90:130] = 3
    ref = np.zeros((120, 160), np.uint8)
    ref[10:40, 10:60] = 2
    masks.write_mask(folder / "pred_masks" / "moth_1.png", pred)
    masks.write_mask(folder / "ref_masks" / "moth_1.png", ref)
    masks.write_mask(folder / "pred_masks" / "moth_2.png", pred)
    pid = quote(summary["id"], safe="")
    page.goto(f"{served.url}#/p/{pid}")
    moth = page.locator("tr[data-group]").nth(1)
    moth.wait_for()
    key = quote(moth.get_attribute("data-group") or "", safe="")
    page.goto(f"{served.url}#/p/{pid}/view/{key}/moth_1")
    page.wait_for_selector("#viewer-stage[data-ready='1']")
    badge = page.locator(".single-head .badge").first
    # The reference shows first; its legend lists ID 2 in the palette's colour.
    assert badge.inner_text() == "reference"
    page.wait_for_selector("#viewer-legend[data-ids='2']")
    palette = page.evaluate(
        "async () => (await (await import('/js/transport.js')).call('app_info')).palette"
    )
    swatch = page.locator("#viewer-legend li[data-id='2'] .swatch").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    r, g, b = bytes.fromhex(palette[2].lstrip("#"))
    assert swatch == f"rgb({r}, {g}, {b})"
    # M: the first press shows this image's prediction, the second its reference again.
    page.keyboard.press("m")
    page.wait_for_selector("#viewer-legend[data-ids='1,3']")
    assert badge.inner_text() == "prediction" and page.inner_text(".single-title") == "moth_1"
    page.keyboard.press("m")
    page.wait_for_selector("#viewer-legend[data-ids='2']")
    assert badge.inner_text() == "reference" and page.inner_text(".single-title") == "moth_1"
    # Zoom and pan as on the label screen: wheel zooms at the pointer, F fits again.
    canvas = page.locator("#viewer-stage canvas")
    fit_scale = float(canvas.get_attribute("data-scale"))
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -400)
    page.wait_for_function(
        f"() => Number(document.querySelector('#viewer-stage canvas').dataset.scale) > {fit_scale * 1.2}"
    )
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 30)
    page.mouse.up()
    page.keyboard.up(" ")
    tx = float(canvas.get_attribute("data-tx"))
    page.keyboard.press("f")
    page.wait_for_function(
        f"() => Math.abs(Number(document.querySelector('#viewer-stage canvas').dataset.scale) - {fit_scale}) < 1e-6"
    )
    assert float(canvas.get_attribute("data-tx")) != tx
    # The mask is painted over the image: ID 2's colour shows inside its box, not outside.
    s = float(canvas.get_attribute("data-scale"))
    ox, oy = (
        box["x"] + float(canvas.get_attribute("data-tx")),
        box["y"] + float(canvas.get_attribute("data-ty")),
    )
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    inside = _pixel(page, "#viewer-stage canvas", ox + 30 * s, oy + 25 * s)
    outside = _pixel(page, "#viewer-stage canvas", ox + 150 * s, oy + 5 * s)
    assert (
        abs(inside[0] - outside[0]) + abs(inside[1] - outside[1]) + abs(inside[2] - outside[2]) > 30
    )
    shot(page, "firstuse-viewer")
    # An image without a reference: M says so and stays on it (no jump to another image).
    page.goto(f"{served.url}#/p/{pid}/view/{key}/moth_2")
    page.wait_for_function(
        "() => document.querySelector('.single-title')?.textContent === 'moth_2'"
    )
    page.keyboard.press("m")
    page.wait_for_selector(".toast:has-text('moth_2 has no reference mask')")
    assert page.inner_text(".single-title") == "moth_2"
    assert page.errors == []


def test_semicolon_csv_is_detected_and_the_delimiter_can_be_changed(page, served, tmp_path):
    folder = tmp_path / "eu"
    comma = _master_csv(folder)
    semi = folder / "export.csv"
    semi.write_text(comma.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")
    page.goto(served.url + "#/new")
    page.fill("#f-csv", str(semi))
    page.dispatch_event("#f-csv", "change")
    page.wait_for_selector("#csv-table")
    assert page.inner_text("#delimiter-note") == "detected: semicolon"
    assert page.locator("#csv-table thead th").count() == 3
    page.wait_for_function("() => document.getElementById('f-img-path').value === 'filepath'")
    # The user's choice wins: split at commas, the file reads as one column (and says so).
    page.select_option("#f-delimiter", ",")
    page.wait_for_function("() => document.querySelectorAll('#csv-table thead th').length === 1")
    assert page.inner_text("#delimiter-note") == "fields split at each comma"
    page.select_option("#f-delimiter", ";")
    page.wait_for_function("() => document.querySelectorAll('#csv-table thead th').length === 3")
    page.wait_for_function("() => document.getElementById('f-img-path').value === 'filepath'")
    page.select_option("#f-pk", "id")
    page.fill("#f-name", "Semicolons")
    page.click("#advanced summary")
    page.fill("#f-folder", str(tmp_path / "project"))
    page.wait_for_selector("#validation-ok")
    page.click("#create-project")
    page.wait_for_url("**#/p/*")
    # The project's copy is comma-separated, as the original SST-GUI reads it.
    master = (tmp_path / "project" / "master.csv").read_text(encoding="utf-8")
    assert master.splitlines() == comma.read_text(encoding="utf-8").splitlines()
    assert page.errors == []


def test_the_page_without_a_token_reads_right_and_says_where_the_url_is(page, served):
    import urllib.error
    import urllib.request

    bare = served.url.split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bare, timeout=30)
    assert info.value.code == 401
    assert info.value.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "?token=…" in info.value.read().decode("utf-8")
    # In the browser: no mojibake ("â€¦"), and the way to the right URL.
    page.goto(bare)
    text = page.inner_text("main")
    assert "?token=…" in text and "â€" not in text
    assert "first line" in text and "sst-desktop --serve" in text
    assert page.evaluate("getComputedStyle(document.querySelector('main')).borderRadius") == "10px"
    shot(page, "firstuse-no-token")


def test_the_label_screens_id_row_fits_its_panel(page, served, tmp_path):
    summary, _ = _create_project(tmp_path)
    page.set_viewport_size({"width": 1280, "height": 800})
    pid = quote(summary["id"], safe="")
    page.goto(f"{served.url}#/p/{pid}")
    row = page.locator("tr[data-group]").first
    row.wait_for()
    key = quote(row.get_attribute("data-group") or "", safe="")
    page.goto(f"{served.url}#/p/{pid}/label/{key}")
    page.wait_for_selector("#new-object")
    panel = page.locator(".id-panel").bounding_box()
    for sel in ("#new-object", "#current-id"):
        box = page.locator(sel).bounding_box()
        assert box["x"] + box["width"] <= panel["x"] + panel["width"], sel
    assert page.errors == []
