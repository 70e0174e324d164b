"""What the screens tell the user after an action, in Debian's chromium against a real server: the
Run header after a run, the label screen's R key and empty clicks, the Export dialog's errors, the
new-project form after an unreadable CSV, error toasts across screens, the toasts after deleting a
project and after a sweep, ID colours and the layout at 1280x800 and 1920x1080."""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from sst_desktop.app.base import MODEL_JOB
from sst_desktop.data import masks
from tests._browser_helpers import (
    chromium_page,
    create_specimen_project,
    in_process_server,
    make_specimens,
    shot,
    stop_in_process,
)

pytestmark = pytest.mark.browser
RUN_TIMEOUT_MS = 240_000


@pytest.fixture
def page(request):
    with chromium_page(request, width=1280, height=800) as pg:
        yield pg


@pytest.fixture
def served():
    """(api, running server) in this process, browser mode; stopped afterwards."""
    api, running = in_process_server()
    yield api, running
    stop_in_process(api, running)


def _body(h: int = 120, w: int = 160) -> np.ndarray:
    """An ID mask with object 1 over the first specimen's body and 2 over its label card."""
    m = np.zeros((h, w), np.uint8)
    m[20:70, 20:80] = 1
    m[80:105, 90:130] = 2
    return m


def _project(tmp_path: Path, **overrides) -> tuple[str, Path, str]:
    """(quoted project id, folder, quoted key of the beetle group) with beetle_0 a reference."""
    summary, folder = create_specimen_project(tmp_path, "Feedback", **overrides)
    masks.write_mask(folder / "ref_masks" / "beetle_0.png", _body())
    from sst_desktop.app.api import Api

    groups = Api(mode="browser").list_groups(summary["id"])
    beetle = next(g for g in groups if "beetle" in str(g["key"]))
    return quote(summary["id"], safe=""), folder, quote(str(beetle["key"]), safe="")


def test_the_run_header_and_start_follow_the_project_after_a_run(
    page, served, tmp_path, sam2_checkpoint
):
    api, running = served
    pid, folder, key = _project(tmp_path, checkpoint=str(sam2_checkpoint))
    # Another model job holds SAM2: the run waits for it, so Cancel surely finds it going.
    release = threading.Event()
    hold = api._jobs.start(
        "hold", lambda job: release.wait(RUN_TIMEOUT_MS / 1000), exclusive=MODEL_JOB
    )
    try:
        page.goto(f"{running.url}#/p/{pid}/run/{key}")
        page.wait_for_selector("#run-summary")
        assert page.inner_text("#run-summary") == "1 group with references, 2 images to predict."
        page.click("#start-run")
        page.wait_for_selector("#cancel-run:not([disabled])")
        # Started on this screen: the note says it runs, not that it shows a run from elsewhere.
        note = page.text_content("#run-note")
        assert note.startswith("Running.") and "Showing" not in note, note
        page.click("#cancel-run")
        page.wait_for_selector("#run-state:text-is('cancelled')")
        # The badge says "cancelled"; the line below says what the cancel left, once.
        message = page.inner_text("#run-message")
        assert "cancelled" not in message.lower() and message.startswith("Stopped before the end")
        page.wait_for_selector("#start-run:not([disabled])")
        assert page.inner_text("#run-summary") == "1 group with references, 2 images to predict."
    finally:
        release.set()
    api._jobs.wait(hold.id, timeout=30)

    page.click("#start-run")
    page.wait_for_selector("#run-state:text-is('done')", timeout=RUN_TIMEOUT_MS)
    # The header is counted again from the project: nothing is left, Start is off until Overwrite.
    page.wait_for_function(
        "() => document.getElementById('run-summary').textContent.includes('0 images left')"
    )
    assert page.inner_text("#run-summary") == (
        "1 group with references, 0 images left to predict: tick Overwrite to redo existing"
        " predictions."
    )
    assert page.is_disabled("#start-run")
    assert sorted(p.name for p in (folder / "pred_masks").glob("*.png")) == [
        "beetle_1.png",
        "beetle_2.png",
    ]
    page.check("#run-overwrite")
    assert page.is_enabled("#start-run")
    assert "2 images to predict (existing predictions are redone)" in page.inner_text(
        "#run-summary"
    )
    shot(page, "feedback-run-done")
    assert page.errors == []


def test_r_always_picks_refine_and_an_empty_click_says_what_to_do(page, served, tmp_path):
    _, running = served
    pid, _, key = _project(tmp_path)
    page.goto(f"{running.url}#/p/{pid}/label/{key}/beetle_1")
    page.wait_for_selector('#stage[data-pk="beetle_1"]')
    page.wait_for_selector(".stage-overlay.hidden", state="attached")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for key_name, mode in (("r", "refine"), ("r", "refine"), ("b", "brush"), ("r", "refine")):
        page.keyboard.press(key_name)
        assert page.get_attribute("#stage", "data-mode") == mode, (key_name, mode)
    page.keyboard.press("s")
    assert page.get_attribute("#stage", "data-mode") == "select"
    # No candidates on this frame: a click in Select mode says how to get some.
    box = page.locator("#stage canvas").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hint = page.locator(".toast:has-text('No candidate masks on this frame')")
    hint.wait_for()
    assert "press R and click the object" in hint.inner_text()
    # The message after generation speaks of one candidate as one.
    said = page.evaluate(
        """async () => {
          const { candidatesFoundText } = await import("/js/candidate_stream.js");
          return [candidatesFoundText(1), candidatesFoundText(3)];
        }"""
    )
    assert said == [
        "1 candidate mask: click it if it belongs to the object",
        "3 candidate masks: click the ones that belong to the object",
    ]
    assert page.errors == []


def test_export_keeps_the_dialog_open_with_the_error_beside_the_path(page, served, tmp_path):
    _, running = served
    pid, _, _ = _project(tmp_path)
    page.goto(f"{running.url}#/p/{pid}")
    page.click("#export")
    page.select_option("#export-format", "csv")
    page.select_option("#export-masks", "ref")
    page.click("dialog[open] button[data-action='start-export']")
    error = page.locator("dialog[open] #export-error")
    error.wait_for()
    assert "Choose where to write the export" in error.inner_text()
    # The dialog and the user's choices stay; no toast repeats the message.
    assert page.input_value("#export-format") == "csv"
    assert page.input_value("#export-masks") == "ref"
    assert page.locator("#toasts .toast-error").count() == 0
    out = tmp_path / "out" / "table.csv"
    out.parent.mkdir()
    page.fill("#export-out", str(out))
    page.click("dialog[open] button[data-action='start-export']")
    page.wait_for_selector("dialog[open]", state="detached")
    page.wait_for_selector("#export-result")
    # The progress bar, the result line and the search row below keep apart.
    boxes = [
        page.locator(sel).bounding_box()
        for sel in ("#quality-progress", "#export-result", "#group-search")
    ]
    for upper, lower in zip(boxes, boxes[1:], strict=False):
        assert lower["y"] - (upper["y"] + upper["height"]) >= 8, boxes
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r[next(iter(r))] for r in rows} == {"beetle_0"}, rows
    assert len(rows) == 2  # one row per part of the one reference
    assert page.errors == []


def test_an_unreadable_csv_clears_what_the_previous_one_filled_in(page, served, tmp_path):
    _, running = served
    made = make_specimens(tmp_path / "data")
    with made.open(newline="", encoding="utf-8") as f:
        rows = [r | {"file": f"photos/{r['specimen']}.png"} for r in csv.DictReader(f)]
    good = tmp_path / "data" / "specimens_files.csv"
    with good.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    bad = tmp_path / "data" / "twice.csv"
    bad.write_text("specimen,taxon,taxon\nbeetle_0,beetle,x\n", encoding="utf-8")
    page.goto(running.url + "#/new")
    page.fill("#f-csv", str(good))
    page.dispatch_event("#f-csv", "change")
    page.wait_for_function(
        "() => document.getElementById('img-path-note').textContent.includes('Chose')"
    )
    assert page.input_value("#f-name") == "specimens_files"
    assert page.input_value("#f-img-path") != ""
    page.fill("#f-csv", str(bad))
    page.dispatch_event("#f-csv", "change")
    page.wait_for_selector(".banner-error:has-text('duplicate column')")
    assert page.input_value("#f-name") == ""
    assert page.input_value("#f-img-path") == ""
    assert page.text_content("#img-path-note") == ""
    # A name the user typed is theirs: it stays across CSVs.
    page.fill("#f-name", "My beetles")
    page.fill("#f-csv", str(good))
    page.dispatch_event("#f-csv", "change")
    page.wait_for_selector("#csv-table")
    page.fill("#f-csv", str(bad))
    page.dispatch_event("#f-csv", "change")
    page.wait_for_selector(".banner-error:has-text('duplicate column')")
    assert page.input_value("#f-name") == "My beetles"
    assert page.errors == []


def test_deleting_a_project_says_which_one_and_what_became_of_its_folder(page, served, tmp_path):
    _, running = served
    kept, kept_folder = create_specimen_project(tmp_path / "a", "Kept beetles")
    gone, gone_folder = create_specimen_project(tmp_path / "b", "Gone beetles")
    page.goto(running.url)
    for summary, files in ((kept, False), (gone, True)):
        card = page.locator(f'[data-project-id="{summary["id"]}"]')
        card.locator("button", has_text="Delete").click()
        if files:
            page.check("dialog[open] #delete-files")
        page.click("dialog[open] [data-action='confirm-delete']")
        card.wait_for(state="detached")
    told = page.locator("#toasts .toast-info .toast-text")
    told.nth(1).wait_for()
    assert told.all_inner_texts() == [
        f"Removed project “Kept beetles” from the list; its folder stays at {kept_folder}.",
        f"Deleted project “Gone beetles” and its folder {gone_folder}.",
    ]
    assert any(kept_folder.iterdir())
    assert not gone_folder.exists()
    assert page.errors == []


def test_error_toasts_stay_on_their_screen_once(page, served, tmp_path):
    _, running = served
    pid, _, _ = _project(tmp_path)
    page.goto(f"{running.url}#/p/{pid}")
    missing = tmp_path / "no-such-folder"
    for _ in range(2):
        page.click("#ground-truth")
        page.fill("#gt-folder", str(missing))
        page.click("dialog[open] button[data-action='save-gt']")
        page.wait_for_selector("#toasts .toast-error")
    # The same error twice is one toast, announced to screen readers.
    errors = page.locator("#toasts .toast-error")
    assert errors.count() == 1
    assert errors.get_attribute("role") == "alert"
    assert str(missing) in errors.inner_text()
    # On another screen the error no longer applies and is gone.
    page.click(".crumbs a:text-is('Projects')")
    page.wait_for_selector("#toasts .toast-error", state="detached")
    assert page.errors == []


def _contrast(page, selector: str) -> float:
    """WCAG contrast ratio of an element's text colour against its background colour."""
    return page.evaluate(
        """(sel) => {
          const s = getComputedStyle(document.querySelector(sel));
          const rgb = (c) => c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
          const lum = (c) => {
            const [r, g, b] = rgb(c).map((v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b;
          };
          const [a, b] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
          return (a + 0.05) / (b + 0.05);
        }""",
        selector,
    )


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_layout_fits_the_window(page, served, tmp_path, size):
    _, running = served
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    pid, _, key = _project(tmp_path)

    # Groups page: the quality buttons keep apart from the search row.
    page.goto(f"{running.url}#/p/{pid}")
    page.wait_for_selector("#group-search")
    gap = page.locator("#group-search").bounding_box()["y"] - (lambda b: b["y"] + b["height"])(
        page.locator("#export").bounding_box()
    )
    assert gap >= 8, gap
    shot(page, f"feedback-groups-{width}")

    # Settings, even with an error under a field: Save is inside the window without scrolling.
    page.click("#project-settings")
    save = page.locator("dialog[open] button[data-action='save-settings']")
    save.wait_for()
    page.fill("#s-image-size", "300")
    save.click()
    page.wait_for_selector("dialog[open] .field-error[data-error-for='image_size']:not(:empty)")
    box = save.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (box, height)
    shot(page, f"feedback-settings-{width}")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog[open]", state="detached")

    # Label screen: the status line shows all of its guidance, and every ID numeral is readable.
    page.goto(f"{running.url}#/p/{pid}/label/{key}/beetle_0")
    page.wait_for_selector('#stage[data-pk="beetle_0"][data-source="ref"]')
    page.wait_for_selector(".stage-overlay.hidden", state="attached")
    page.click("#objects li[data-id='1'] button[title^='Select this object']")
    page.keyboard.press("e")
    page.mouse.move(0, 0)
    status = page.locator("#label-status")
    text = status.inner_text()
    assert text.startswith("Object 1 selected") and text.endswith("Del: delete it."), text
    fits = page.evaluate(
        "() => { const s = document.getElementById('label-status');"
        " return [s.scrollWidth <= s.clientWidth, s.scrollHeight <= s.clientHeight]; }"
    )
    assert fits == [True, True]
    for i in range(1, 10):
        assert _contrast(page, f".swatch[data-id='{i}']") >= 3, i
    assert _contrast(page, ".swatch[data-id='4']") >= 4.5
    shot(page, f"feedback-label-{width}")
    assert page.errors == []


def test_the_add_reference_select_shows_its_whole_label_at_1280(page, served, tmp_path):
    _, running = served
    pid, _, key = _project(tmp_path)
    page.goto(f"{running.url}#/p/{pid}/label/{key}/beetle_0")
    page.wait_for_selector("#add-ref option[value='']", state="attached")
    select = page.locator("#add-ref").bounding_box()
    inner = page.evaluate(
        """() => {
          const p = document.querySelector('#add-ref').closest('.panel');
          const r = p.getBoundingClientRect(), s = getComputedStyle(p);
          return { left: r.left + parseFloat(s.paddingLeft),
                   right: r.left + p.clientWidth - parseFloat(s.paddingRight) };
        }"""
    )
    assert inner["left"] <= select["x"] and select["x"] + select["width"] <= inner["right"], (
        select,
        inner,
    )
    # A copy with the same style sized to its content (label, padding, arrow) is no wider: the
    # label is not cut.
    widths = page.evaluate(
        """() => {
          const s = document.getElementById('add-ref');
          const copy = s.cloneNode(false);
          copy.append(s.options[0].cloneNode(true));
          copy.style.width = 'auto';
          copy.style.minWidth = '0';
          s.parentNode.append(copy);
          const need = copy.getBoundingClientRect().width;
          copy.remove();
          return [s.options[0].text, need, s.getBoundingClientRect().width];
        }"""
    )
    assert widths[0] == "+ Add a frame as reference…"
    assert widths[1] <= widths[2], widths
    assert page.errors == []


def test_the_sweep_result_keeps_apart_from_its_neighbours(page, served, tmp_path, sam2_checkpoint):
    _, running = served
    pid, folder, _ = _project(tmp_path, checkpoint=str(sam2_checkpoint))
    truth = tmp_path / "truth"
    truth.mkdir()
    for i in range(3):
        masks.write_mask(truth / f"beetle_{i}.png", _body())
    page.goto(f"{running.url}#/p/{pid}")
    page.click("#ground-truth")
    page.fill("#gt-folder", str(truth))
    page.click("dialog[open] button[data-action='save-gt']")
    page.wait_for_selector("#sweep:not([disabled])")
    page.click("#sweep")
    page.fill("#sweep-ks", "1")
    page.fill("#sweep-seeds", "1")
    page.click("dialog[open] button[data-action='start-sweep']")
    page.wait_for_selector("#sweep-result", timeout=RUN_TIMEOUT_MS)
    # A toast says the sweep ended, with the all-groups mean the table shows, and where the table is.
    told = page.locator("#toasts .toast-success:has-text('Sweep finished')")
    told.wait_for()
    overall = page.inner_text("#sweep-result tbody tr:first-child td:nth-child(2)").split(" ")[0]
    assert told.inner_text().startswith(
        f"Sweep finished. Mean IoU over all groups: k = 1: {overall}. Per group: the table"
        " under the Sweep button."
    ), told.inner_text()
    boxes = [
        page.locator(sel).bounding_box()
        for sel in ("#quality-progress", "#sweep-result", "#group-search")
    ]
    for upper, lower in zip(boxes, boxes[1:], strict=False):
        assert lower["y"] - (upper["y"] + upper["height"]) >= 8, boxes
    shot(page, "feedback-sweep")
    assert page.errors == []
