"""`--scheduler`: a run's groups (or chunks of targets) as tasks on a Dask distributed cluster.

Each task runs the ordinary group loop (`run_inference`) on a worker, which writes masks straight
into the project folder on the shared filesystem with the usual atomic writes, claims and resume
rules; the worker process keeps its model between tasks (`get_model` caches per process). A task
whose worker dies is run again elsewhere by Dask; the masks it had finished are skipped there.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any

from sst_desktop.errors import UserError
from sst_desktop.run.locks import clean_stale_files
from sst_desktop.run.runner import (
    EventSink,
    RunOptions,
    RunSummary,
    plan_run,
    run_inference,
    save_summary,
)
from sst_desktop.run.shards import WorkUnit, options_for, work_units

TOPIC = "sst-desktop-events"
# Worker events passed on to the client; each worker's own progress and run events are not.
FORWARDED = {"frame", "group_start", "group_end", "group_skipped", "model_load"}
# Tasks per worker: enough that a fast worker takes over a slow or dead one's share.
TASKS_PER_WORKER = 2


def run_task(spec_path: str, options: RunOptions, unit: WorkUnit) -> dict[str, Any]:
    """On a worker: run one unit through the group loop; its summary for the client to merge."""
    from distributed import get_worker

    from sst_desktop.data.project import Project

    worker = get_worker()

    def forward(event: dict[str, Any]) -> None:
        if event.get("type") in FORWARDED:
            worker.log_event(TOPIC, event)

    summary = run_inference(
        Project.open(spec_path),
        options_for(options, [unit]),
        on_event=forward,
        label=f"sst-desktop cluster worker {worker.address}",
        save=False,
    )
    return summary.to_dict()


def _connect(address: str) -> Any:
    """A Dask client for `address`, or one clear line saying what is missing."""
    try:
        from distributed import Client
    except ImportError:
        raise UserError(
            "--scheduler needs Dask distributed: pip install 'sst-desktop[cluster]'"
        ) from None
    try:
        return Client(address, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise UserError(
            f"--scheduler {address}: no Dask scheduler answered ({exc}); start one with "
            "`dask scheduler` and pass the address it prints"
        ) from None


class _Merge:
    """The whole run's summary and progress, built from worker events and task summaries."""

    def __init__(self, options: RunOptions, spec_path: str, on_event: EventSink | None) -> None:
        self.summary = RunSummary(
            spec_path=spec_path,
            started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            options=asdict(options),
        )
        self.on_event = on_event
        self.lock = threading.Lock()
        self.total = 0
        self.done: set[str] = set()  # pks counted once, even when a retried task reports them
        self.started: float | None = None

    def emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def worker_event(self, event: Any) -> None:
        """A forwarded worker event (Dask hands (time, message))."""
        message = event[1] if isinstance(event, tuple) else event
        if not isinstance(message, dict):
            return
        with self.lock:
            if message.get("type") == "model_load" and self.started is None:
                self.started = time.monotonic()
            if message.get("type") == "frame" and not message.get("reference"):
                self.done.add(str(message.get("pk")))
            self.emit(message)
            if message.get("type") == "frame":
                self.progress()

    def progress(self) -> None:
        done = min(len(self.done), self.total)
        ips = eta = None
        if self.started is not None and done:
            elapsed = time.monotonic() - self.started
            ips = done / elapsed if elapsed > 0 else None
            eta = (self.total - done) / ips if ips else None
        self.emit({"type": "progress", "done": done, "total": self.total, "ips": ips, "eta_s": eta})

    def add(self, part: dict[str, Any]) -> None:
        """Fold one task's summary in."""
        s = self.summary
        with self.lock:
            s.written += part["written"]
            s.skipped += part["skipped"]
            s.written_pks += part["written_pks"]
            s.busy += part["busy"]
            s.failed += part["failed"]
            s.flagged += part["flagged"]
            s.groups_skipped += [g for g in part["groups_skipped"] if g not in s.groups_skipped]
            s.groups_without_references += [
                g for g in part["groups_without_references"] if g not in s.groups_without_references
            ]
            s.reference_scope = part["reference_scope"]
            if part["error"]:
                s.error = f"{s.error}; {part['error']}" if s.error else part["error"]

    def task_failed(self, unit: WorkUnit, exc: BaseException) -> None:
        reason = f"task failed: {type(exc).__name__}: {exc}"
        with self.lock:
            self.summary.failed += [{"pk": pk, "reason": reason} for pk in unit.pks]


def run_on_cluster(
    project: Any,
    address: str,
    options: RunOptions | None = None,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
) -> RunSummary:
    """Run the selected groups as tasks on the Dask scheduler at `address`; one merged summary."""
    from distributed import as_completed

    options = options or RunOptions()
    cancel = cancel or threading.Event()
    spec_path = str(getattr(project, "spec_path", "") or "")
    if not spec_path:
        raise UserError("--scheduler needs the project's spec.json on a filesystem workers share")
    merge = _Merge(options, spec_path, on_event)
    start = time.monotonic()
    clean_stale_files(project.spec.root)
    plans = plan_run(project, options)
    merge.total = sum(len(p.targets) for p in plans)
    client = _connect(address)
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        units = work_units(project, options)
        total = sum(u.weight for u in units)
        if total:
            chunk = math.ceil(total / (workers * TASKS_PER_WORKER))
            units = work_units(project, options, max_targets=chunk)
        merge.emit(
            {"type": "run_start", "groups": len(plans), "targets": merge.total, "skipped": 0}
        )
        client.subscribe_topic(TOPIC, merge.worker_event)
        device = options.device or project.spec.device
        # A GPU worker (started with --resources GPU=1) runs one task at a time.
        resources = {"GPU": 1} if str(device).startswith("cuda") else None
        run_id = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                run_task,
                spec_path,
                options,
                unit,
                key=f"sst-desktop-{run_id}-{index}",
                resources=resources,
                pure=False,
            ): unit
            for index, unit in enumerate(units)
        }
        for future in as_completed(list(futures)):
            if cancel.is_set():
                merge.summary.cancelled = True
                client.cancel(list(futures))
                break
            try:
                merge.add(future.result())
            except Exception as exc:  # a task that failed (KilledWorker after retries, ...)
                merge.task_failed(futures[future], exc)
        client.unsubscribe_topic(TOPIC)
    finally:
        client.close()
    summary = merge.summary
    summary.elapsed_s = round(time.monotonic() - start, 3)
    summary.images_per_s = (
        round(summary.written / summary.elapsed_s, 3) if summary.elapsed_s > 0 else 0.0
    )
    save_summary(project.spec.root, summary)
    merge.progress()
    merge.emit({"type": "run_end", "summary": summary.to_dict()})
    return summary
