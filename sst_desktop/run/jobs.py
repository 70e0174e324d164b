"""Background jobs (candidate generation, model download, propagation) with progress and cancel."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from sst_desktop.errors import UserError, describe_error
from sst_desktop.run.progress import rate

log = logging.getLogger(__name__)

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
FINISHED_STATES = (DONE, FAILED, CANCELLED)

# Finished jobs kept for `job_status` polling; older ones are forgotten.
MAX_FINISHED_JOBS = 200
LOG_LINES = 500


class Job:
    """One background task: state, progress, rate, a bounded log, its result or error, a cancel flag."""

    def __init__(self, kind: str, total: int = 0, message: str = "") -> None:
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        self.state = RUNNING
        self.done = 0
        self.total = total
        self.message = message
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.result: Any = None
        self.error: str | None = None
        self.cancel = threading.Event()
        self.started = time.monotonic()
        self.finished: float | None = None
        self._rate_start: float | None = None  # when the first counted unit began
        self._rate_done0 = 0
        self._lock = threading.Lock()

    # -- called from the worker ------------------------------------------------------------
    def set_message(self, message: str) -> None:
        """Show `message` as the job's current activity (and add it to the log)."""
        with self._lock:
            self.message = message
            self.log.append(message)

    def add_log(self, line: str) -> None:
        """Append one line to the job's log."""
        with self._lock:
            self.log.append(line)

    def set_progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Record `done` of `total` units; the rate counts from the first progress report on."""
        now = time.monotonic()
        with self._lock:
            if total is not None:
                self.total = int(total)
            if self._rate_start is None:
                # The model load before the first unit must not drag the rate down.
                self._rate_start = now
                self._rate_done0 = int(done)
            self.done = int(done)
            if message is not None:
                self.message = message

    def cancelled(self) -> bool:
        """True once the user asked to cancel."""
        return self.cancel.is_set()

    # -- read by the UI --------------------------------------------------------------------
    def rate(self) -> tuple[float | None, float | None]:
        """(units per second, estimated seconds left), None where not known yet."""
        if self._rate_start is None:
            return None, None
        end = self.finished if self.finished is not None else time.monotonic()
        left = max(self.total - self.done, 0)
        ips, eta = rate(self.done - self._rate_done0, left, end - self._rate_start)
        if ips is None or self.state != RUNNING or not self.total:
            eta = None if ips is None or left else 0.0
        return ips, eta

    def to_dict(self, log_lines: int = 50) -> dict[str, Any]:
        """The `job_status` dict of the JS API."""
        with self._lock:
            ips, eta = self.rate()
            lines = list(self.log)[-log_lines:] if log_lines else []
            return {
                "id": self.id,
                "kind": self.kind,
                "state": self.state,
                "done": self.done,
                "total": self.total,
                "ips": round(ips, 3) if ips is not None else None,
                "eta_s": round(eta, 1) if eta is not None else None,
                "message": self.message,
                "log": lines,
                "result": self.result,
                "error": self.error,
                "elapsed_s": round(
                    (self.finished if self.finished is not None else time.monotonic())
                    - self.started,
                    2,
                ),
            }


class JobManager:
    """Runs each job in a daemon thread; jobs sharing an `exclusive` name run one at a time."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._exclusive: dict[str, threading.Lock] = {}

    def start(
        self,
        kind: str,
        work: Callable[[Job], Any],
        *,
        exclusive: str | None = None,
        message: str = "starting",
        attrs: dict[str, Any] | None = None,
    ) -> Job:
        """Start `work(job)` in a thread; its return value becomes `job.result`.

        `attrs` are set on the job before it starts (e.g. project_id), so lookups never miss them.
        """
        job = Job(kind, message=message)
        for name, value in (attrs or {}).items():
            setattr(job, name, value)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
            gate = self._exclusive.setdefault(exclusive, threading.Lock()) if exclusive else None
        thread = threading.Thread(
            target=self._run, args=(job, work, gate), name=f"job-{kind}-{job.id}", daemon=True
        )
        thread.start()
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id, or a UserError saying it is unknown."""
        with self._lock:
            job = self._jobs.get(str(job_id))
        if job is None:
            raise UserError(f"Unknown job {job_id!r}: it finished long ago or the app restarted.")
        return job

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop at its next check; True if it was still running."""
        job = self.get(job_id)
        job.cancel.set()
        if job.state == RUNNING:
            job.set_message("cancelling…")
            return True
        return False

    def jobs(self, kind: str | None = None, running_only: bool = False) -> list[Job]:
        """Known jobs, oldest first, optionally of one kind or only the running ones."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [
            j
            for j in jobs
            if (kind is None or j.kind == kind) and (not running_only or j.state == RUNNING)
        ]

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finishes (tests and the CLI); returns it."""
        job = self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.state == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout} s")
            time.sleep(0.02)
        return job

    def _run(self, job: Job, work: Callable[[Job], Any], gate: threading.Lock | None) -> None:
        acquired = False
        try:
            if gate is not None:
                acquired = gate.acquire(blocking=False)
                if not acquired:
                    job.set_message("waiting for another job to finish")
                    while not acquired and not job.cancel.is_set():
                        acquired = gate.acquire(timeout=0.2)
            try:
                result = None if job.cancel.is_set() else work(job)
            finally:
                if acquired:
                    gate.release()
            with job._lock:
                job.finished = time.monotonic()
                job.result = result
                job.state = CANCELLED if job.cancel.is_set() else DONE
                if job.state == CANCELLED:
                    job.message = "cancelled"
        except BaseException as exc:  # a failing job must never take the app down
            text = describe_error(exc)
            if not isinstance(exc, UserError):
                log.error("job %s (%s) failed", job.id, job.kind, exc_info=exc)
            with job._lock:
                job.finished = time.monotonic()
                job.error = text
                job.state = CANCELLED if job.cancel.is_set() else FAILED
                job.message = text
                job.log.append(f"error: {text}")
        finally:
            if job.finished is None:
                job.finished = time.monotonic()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED_STATES]
        for old in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self._jobs[old.id]
