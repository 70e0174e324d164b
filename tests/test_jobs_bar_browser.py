"""The job bar (ui/js/jobs_indicator.js) in Debian's chromium, fed scripted `list_jobs` answers:
its chips stay the same elements while what they show goes on, so a click on Cancel is never lost."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from tests._browser_helpers import chromium_page, create_specimen_project, in_process_server

pytestmark = pytest.mark.browser

LIST_JOBS = re.compile(r"/api/list_jobs\b")
CANCEL_JOB = re.compile(r"/api/cancel_job\b")
FIRST_CHIP = "() => document.querySelector('#job-bar .job-chip')"
CANCEL = "#job-bar .job-chip button"
# Notes in the page, as it makes them, the job of every cancel_job request; and while the bar
# shows the job `window.holdWhileShown`, keeps new polls unanswered until `releasePolls()`.
PAGE_HOOKS = """
window.cancels = [];
window.holdWhileShown = null;
const held = [];
const realFetch = window.fetch.bind(window);
window.fetch = (url, options) => {
  const text = String(url);
  if (text.includes("/api/cancel_job")) window.cancels.push(JSON.parse(options.body).args[0]);
  const shown = window.holdWhileShown
    && document.querySelector(`#job-bar .job-chip[data-job-id='${window.holdWhileShown}']`);
  if (text.includes("/api/list_jobs") && shown) {
    return new Promise((resolve) => held.push(() => resolve(realFetch(url, options))));
  }
  return realFetch(url, options);
};
window.releasePolls = () => {
  window.holdWhileShown = null;
  held.splice(0).forEach((go) => go());
};
"""


@pytest.fixture
def page(request):
    with chromium_page(request) as pg:
        yield pg


def _job(job_id: str, project_id: str, pk: str = "beetle_0", kind: str = "candidates") -> dict:
    """A running job as `list_jobs` reports it."""
    return {
        "id": job_id,
        "kind": kind,
        "state": "running",
        "done": 1,
        "total": 4,
        "ips": None,
        "eta_s": None,
        "message": "",
        "log": [],
        "result": None,
        "error": None,
        "elapsed_s": 2.0,
        "project_id": project_id,
        "pk": pk,
        "title": f"Candidates · {pk}" if kind == "candidates" else "Run · beetle",
    }


def _same_chip(page, name: str) -> bool:
    """Whether the chip kept as window[name] is still the element in the bar for its place."""
    return page.evaluate(
        "(name) => { const el = window[name]; return el.isConnected && "
        "el === document.querySelector(`#job-bar .job-chip[data-job-id='${el.dataset.jobId}']`); }",
        name,
    )


def test_a_job_started_again_between_two_polls_keeps_the_chip(page, tmp_path):
    # The bar polls once a second, so it still shows a job that has just ended. When the same
    # thing starts again meanwhile (Cancel, then Generate on the same frame), the next poll has
    # the new job instead: its chip must be the one on screen, not a look-alike put in its place
    # while the user may be pressing its Cancel. Anything else gets a chip of its own.
    summary, _ = create_specimen_project(tmp_path, "Job bar")
    api, running = in_process_server()
    pid = summary["id"]
    answer = {"jobs": [_job("a1", pid)], "fail": False}

    def list_jobs(route) -> None:
        if answer["fail"]:
            route.fulfill(status=500, body="down for a moment")
        else:
            route.fulfill(json={"ok": True, "result": answer["jobs"]})

    def cancel_job(route) -> None:
        route.fulfill(json={"ok": True, "result": {"ok": True, "was_running": True}})

    def cancelled_by(click_selector: str) -> str:
        with page.expect_request(CANCEL_JOB) as request:
            page.click(click_selector)
        return json.loads(request.value.post_data)["args"][0]

    try:
        page.route(LIST_JOBS, list_jobs)
        page.route(CANCEL_JOB, cancel_job)
        page.goto(f"{running.url}#/p/{quote(pid, safe='')}")
        page.wait_for_selector("#job-bar .job-chip[data-job-id='a1']")
        page.evaluate(f"() => {{ window.first = ({FIRST_CHIP})(); }}")
        # Cancel pressed: the server is asked, the job is still listed while it stops.
        assert cancelled_by("#job-bar .job-chip button") == "a1"
        page.wait_for_selector("#job-bar .job-chip button[disabled]:has-text('Cancelling…')")

        # a1 ended and a2 started for the same frame between two polls.
        answer["jobs"] = [_job("a2", pid)]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='a2']")
        assert _same_chip(page, "first")
        assert page.locator("#job-bar .job-chip").count() == 1
        # Its Cancel is a fresh one, and it stops the job the chip shows now.
        assert page.inner_text("#job-bar .job-chip button") == "Cancel"
        assert cancelled_by("#job-bar .job-chip button:not([disabled])") == "a2"

        # A failed poll keeps the chips; a run joins; the two change places: same elements.
        with page.expect_console_message(lambda m: "list_jobs" in m.text):
            answer["fail"] = True  # the bar warns on the console, then draws what it had
        answer["fail"] = False
        assert _same_chip(page, "first")
        answer["jobs"] = [_job("a2", pid), _job("r1", pid, kind="run")]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='r1']")
        page.evaluate("() => { window.run = document.querySelector(\"[data-job-id='r1']\"); }")
        answer["jobs"] = [_job("r1", pid, kind="run"), _job("a2", pid)]
        page.wait_for_function(f"() => ({FIRST_CHIP})().dataset.jobId === 'r1'")
        assert _same_chip(page, "first") and _same_chip(page, "run")

        # Candidates of another frame are another thing: a chip of their own.
        answer["jobs"] = [_job("r1", pid, kind="run"), _job("b1", pid, pk="beetle_1")]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='b1']")
        assert _same_chip(page, "run")
        assert page.evaluate("() => !window.first.isConnected")
        assert "beetle_1" in page.inner_text("#job-bar .job-chip[data-job-id='b1']")
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()


def test_cancel_stops_only_the_job_the_chip_showed_when_pressed(page, tmp_path):
    # Another job may take a chip over between the press and the release of a click, or between
    # the two clicks of a double click: the click must never cancel a job the user did not see.
    summary, _ = create_specimen_project(tmp_path, "Job bar")
    api, running = in_process_server()
    pid = summary["id"]
    answer = {"jobs": [_job("a1", pid)]}

    def list_jobs(route) -> None:
        route.fulfill(json={"ok": True, "result": answer["jobs"]})

    def cancel_job(route) -> None:
        route.fulfill(json={"ok": True, "result": {"ok": True, "was_running": True}})

    def cancels() -> list:
        return page.evaluate("() => window.cancels")

    try:
        page.add_init_script(PAGE_HOOKS)
        page.route(LIST_JOBS, list_jobs)
        page.route(CANCEL_JOB, cancel_job)
        page.goto(f"{running.url}#/p/{quote(pid, safe='')}")
        page.wait_for_selector("#job-bar .job-chip[data-job-id='a1']")

        # Pressed on a1; a1 ends and a2, showing the same, takes the chip over; released.
        box = page.locator(CANCEL).bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        answer["jobs"] = [_job("a2", pid)]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='a2']")
        page.mouse.up()
        assert cancels() == []
        assert page.inner_text(CANCEL) == "Cancel" and page.is_enabled(CANCEL)
        # A click on the chip cancels the job it shows.
        page.click(CANCEL)
        page.wait_for_selector(f"{CANCEL}[disabled]:has-text('Cancelling…')")
        assert cancels() == ["a2"]

        # A double click on b1's Cancel, with b2 taking the chip over between the two clicks.
        answer["jobs"] = [_job("b1", pid, pk="beetle_1")]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='b1']")
        box = page.locator(CANCEL).bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.click(x, y)
        page.wait_for_selector(f"{CANCEL}[disabled]:has-text('Cancelling…')")
        page.evaluate("() => { window.holdWhileShown = 'b2'; }")  # the bar stays as drawn
        answer["jobs"] = [_job("b2", pid, pk="beetle_1")]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='b2']")
        page.mouse.click(x, y)
        assert cancels() == ["a2", "b1"]
        # At the next poll b2's Cancel is usable, and stops b2.
        page.evaluate("() => window.releasePolls()")
        page.click(f"{CANCEL}:not([disabled])")
        page.wait_for_selector(f"{CANCEL}[disabled]:has-text('Cancelling…')")
        assert cancels() == ["a2", "b1", "b2"]

        # From the keyboard: Space pressed on c1, c2 takes the chip over, Space released.
        answer["jobs"] = [_job("c1", pid, pk="beetle_2")]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='c1']")
        page.focus(CANCEL)
        page.keyboard.down("Space")
        answer["jobs"] = [_job("c2", pid, pk="beetle_2")]
        page.wait_for_selector("#job-bar .job-chip[data-job-id='c2']")
        page.keyboard.up("Space")
        assert cancels() == ["a2", "b1", "b2"]
        page.keyboard.press("Enter")  # the chip's button still has the focus
        page.wait_for_selector(f"{CANCEL}[disabled]:has-text('Cancelling…')")
        assert cancels() == ["a2", "b1", "b2", "c2"]
        assert page.errors == []
    finally:
        running.stop()
        api._shutdown()
