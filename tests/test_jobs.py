"""Background jobs: progress, rate, cancel, failures, exclusive model use."""

from __future__ import annotations

import threading
import time

import pytest

from sst_desktop.errors import UserError
from sst_desktop.run.jobs import CANCELLED, DONE, FAILED, JobManager, describe_error


def test_job_reports_progress_rate_and_result():
    manager = JobManager()
    release = threading.Event()

    def work(job):
        job.set_message("loading")
        job.set_progress(0, 4)
        for i in range(1, 4):
            time.sleep(0.01)
            job.set_progress(i, 4, message=f"frame {i}")
        release.wait(5)
        job.set_progress(4)
        job.add_log("all frames written")
        return {"written": 4}

    job = manager.start("run", work)
    deadline = time.monotonic() + 5
    while job.done < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    status = manager.get(job.id).to_dict()
    assert status["state"] == "running"
    assert (status["done"], status["total"]) == (3, 4)
    assert status["ips"] is not None and status["ips"] > 0
    assert status["eta_s"] is not None and status["eta_s"] >= 0
    release.set()
    manager.wait(job.id, timeout=5)
    status = job.to_dict()
    assert status["state"] == DONE
    assert status["result"] == {"written": 4}
    assert status["error"] is None
    assert status["log"][-1] == "all frames written"
    assert "loading" in status["log"]


def test_cancel_stops_a_cooperative_job():
    manager = JobManager()
    started = threading.Event()

    def work(job):
        started.set()
        while not job.cancelled():
            time.sleep(0.005)
        return "partial"

    job = manager.start("run", work)
    assert started.wait(5)
    assert manager.cancel(job.id) is True
    manager.wait(job.id, timeout=5)
    assert job.state == CANCELLED
    assert job.to_dict()["message"] == "cancelled"
    assert manager.cancel(job.id) is False  # already finished


def test_user_error_text_is_kept_and_unexpected_errors_name_their_class(caplog):
    manager = JobManager()

    def user_failure(job):
        raise UserError("Checkpoint x.pt does not exist: fix the path.")

    def bug(job):
        raise ZeroDivisionError("division by zero")

    a = manager.wait(manager.start("candidates", user_failure).id, timeout=5)
    b = manager.wait(manager.start("candidates", bug).id, timeout=5)
    assert a.state == FAILED and a.error == "Checkpoint x.pt does not exist: fix the path."
    assert b.state == FAILED and b.error == "ZeroDivisionError: division by zero"
    assert b.to_dict()["log"][-1] == "error: ZeroDivisionError: division by zero"
    assert describe_error(KeyError()) == "KeyError"


def test_exclusive_jobs_run_one_at_a_time_and_a_waiting_job_can_be_cancelled():
    manager = JobManager()
    first_in = threading.Event()
    release = threading.Event()
    running = []

    def first(job):
        running.append("first")
        first_in.set()
        release.wait(5)
        return 1

    def second(job):
        running.append("second")
        return 2

    a = manager.start("run", first, exclusive="model")
    assert first_in.wait(5)
    b = manager.start("candidates", second, exclusive="model")
    c = manager.start("candidates", second, exclusive="model")
    time.sleep(0.1)
    assert running == ["first"]  # b and c wait for the model
    assert "waiting" in b.to_dict()["message"]
    manager.cancel(c.id)
    release.set()
    assert manager.wait(a.id, timeout=5).result == 1
    assert manager.wait(b.id, timeout=5).result == 2
    assert manager.wait(c.id, timeout=5).state == CANCELLED
    assert running == ["first", "second"]


def test_unknown_job_is_a_user_error():
    with pytest.raises(UserError, match="Unknown job"):
        JobManager().get("nope")
