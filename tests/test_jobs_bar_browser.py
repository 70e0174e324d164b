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
