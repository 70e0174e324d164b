"""Candidates in the browser: progress and the first candidates before the end, Cancel, and
per-project candidate settings with presets and Reset."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests._browser_helpers import (
    chromium_page,
    in_process_server,
    specimen_config,
    stop_in_process,
)

pytestmark = pytest.mark.browser

MODEL_TIMEOUT_MS = 240_000


@pytest.fixture
def page(request):
    with chromium_page(request) as pg:
        yield pg


@pytest.fixture
def app(tmp_path, sam2_checkpoint):
    """Two projects of the specimen photos (tiny model, 256 px, CPU) and a real server."""
    api, running = in_process_server()
    ids = []
    for name in ("one", "two"):
        config = specimen_config(
            tmp_path / "data",
            tmp_path / name,
            f"Candidates {name}",
            checkpoint=str(sam2_checkpoint),
        )
        ids.append(api.create_project(config)["id"])
    try:
        yield {"api": api, "ids": ids, "url": running.url}
    finally:
        stop_in_process(api, running)


def _open(page, app, pid: str, pk: str = "beetle_0") -> None:
    group = app["api"].list_groups(pid)[0]["key"]
    q = lambda v: quote(str(v), safe="")  # noqa: E731
    page.goto(f"{app['url']}#/p/{q(pid)}/label/{q(group)}/{q(pk)}")
    page.wait_for_function(f"document.querySelector('#stage')?.dataset.pk === '{pk}'")
    page.wait_for_selector("#generate:not([disabled])")


def _setting(page, name: str) -> str:
    return page.locator(f'#cand-params input[data-param="{name}"]').input_value()


def _set(page, name: str, value: str) -> None:
    box = page.locator(f'#cand-params input[data-param="{name}"]')
    box.fill(value)
    box.dispatch_event("change")
    page.wait_for_function(
        f"document.querySelector('#cand-params input[data-param=\"{name}\"]')?.value === '{value}'"
        f" && document.querySelector('[data-setting=\"{name}\"]')"
    )


def test_settings_are_kept_per_project_and_reset_restores_the_preset(page, app):
    one, two = app["ids"]
    _open(page, app, one)
    page.click("#cand-params summary")
    page.wait_for_selector("#cand-preset")
    assert page.locator("#cand-preset").input_value() == "fast"  # no GPU here
    assert _setting(page, "points_per_side") == "16"
    assert page.locator('[data-setting="points_per_side"] .help').inner_text().startswith("A grid")
    _set(page, "points_per_side", "24")
    page.wait_for_selector('[data-setting="points_per_side"].changed')
    page.select_option("#cand-preset", "fast")  # same preset again: drops the change
    page.wait_for_function("!document.querySelector('[data-setting=\"points_per_side\"].changed')")
    _set(page, "points_per_side", "24")
    page.wait_for_selector('[data-setting="points_per_side"].changed')
    spec = json.loads(app["api"]._project(one).spec_path.read_text())
    assert spec["candidates"] == {"preset": "fast", "points_per_side": 24}

    page.reload()  # kept by the project, not the page
    page.wait_for_selector("#generate:not([disabled])")
    page.click("#cand-params summary")
    page.wait_for_selector('[data-setting="points_per_side"].changed')
    assert _setting(page, "points_per_side") == "24"

    _open(page, app, two)  # the other project has its own settings
    page.click("#cand-params summary")
    page.wait_for_selector("#cand-preset")
    assert _setting(page, "points_per_side") == "16"

    _open(page, app, one)
    page.click("#cand-params summary")
    page.wait_for_selector('[data-setting="points_per_side"].changed')
    page.click("#cand-reset")
    page.wait_for_function("!document.querySelector('[data-setting=\"points_per_side\"].changed')")
    assert _setting(page, "points_per_side") == "16"
    assert "candidates" not in json.loads(app["api"]._project(one).spec_path.read_text())
    assert page.errors == []


def test_candidates_arrive_during_generation_and_cancel_stops_it(page, app):
    one, _ = app["ids"]
    api = app["api"]
    # Many small steps with every mask kept: candidates exist long before the last step.
    api.set_candidate_settings(
        one,
        "fast",
        {
            "points_per_side": 16,
            "points_per_batch": 1,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "box_nms_thresh": 1.0,
        },
    )
    _open(page, app, one)
    page.click("#generate")
    page.wait_for_selector("#cand-progress:not(.hidden)")
    # Candidates on the image while the progress line still counts steps (256 in all).
    page.wait_for_function(
        "Number(document.getElementById('stage').dataset.masks) > 0"
        " && /step \\d+ of 256/.test(document.getElementById('cand-progress-text').textContent)",
        timeout=MODEL_TIMEOUT_MS,
    )
    text = page.locator("#cand-progress-text").inner_text()
    assert "elapsed" in text
    job = next(j for j in api.list_jobs(one) if j["kind"] == "candidates")
    page.click("#cancel-candidates")
    page.wait_for_selector(
        ".toast:has-text('Candidate generation cancelled')", timeout=MODEL_TIMEOUT_MS
    )
    status = api.job_status(job["id"])
    assert status["state"] == "cancelled" and status["done"] < status["total"] == 256
    assert page.locator("#cand-progress").evaluate("el => el.classList.contains('hidden')")
    # What was found stays, on the screen and in the session.
    shown = int(page.get_attribute("#stage", "data-masks"))
    assert shown == len(api.open_frame(one, "beetle_0")["masks"]) > 0
    assert page.errors == []
