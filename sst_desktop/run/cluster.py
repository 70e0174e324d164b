"""`--scheduler`: a run's groups (or chunks of targets) as tasks on a Dask distributed cluster.

Each task runs the ordinary group loop (`run_inference`) on a worker, which writes masks straight
into the project folder on the shared filesystem with the usual atomic writes, claims and resume
rules; the worker process keeps its model between tasks (`get_model` caches per process). A task
whose worker dies is run again elsewhere by Dask; the masks it had finished are skipped there, and
the merged summary still counts them as written by this run. Cancelling the run on the client sets
a Dask `Event` named after the run; every task watches it and stops after its batch in flight.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from sst_desktop.data.project import Project
from sst_desktop.engine.sam2_model import loaded_models
from sst_desktop.errors import UserError
from sst_desktop.run.locks import clean_stale_files
from sst_desktop.run.pipeline import STAGES, format_timings, per_image_ms, stage_row
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
# How long one wait of a task's cancel watcher lasts before it checks that its task still runs.
WATCH_S = 1.0
GPU_DEVICES = ("cuda", "mps")
NEEDS_DISTRIBUTED = "--scheduler needs Dask distributed: pip install 'sst-desktop[cluster]'"


def task_resources(device: str, workers: Iterable[dict[str, Any]]) -> dict[str, float] | None:
    """The Dask resources one task asks for: one GPU, or nothing (as many as a worker's threads).

    `cuda`/`mps` ask for a GPU, `cpu` for nothing; `auto` asks for a GPU only when every worker
    offers one (`--resources GPU=1`), since a task asking for one never runs on a CPU worker.
    """
    device = str(device or "auto")
    if device.startswith(GPU_DEVICES):
        return {"GPU": 1}
    if device == "auto":
        offers = [(w.get("resources") or {}).get("GPU", 0) for w in workers]
        if offers and all(offer >= 1 for offer in offers):
            return {"GPU": 1}
    return None


class _Watch:
    """On a worker: a local cancel flag set when the run's Dask `Event` is set on the client."""

    def __init__(self, name: str | None) -> None:
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.stop: Any = None
        if name:
            from distributed import Event  # optional extra, present on every worker

            self.stop = Event(name)
            if self.stop.is_set():
                self.cancel.set()
            else:
                threading.Thread(target=self.watch, daemon=True).start()

    def watch(self) -> None:
        while not self.done.is_set():
            try:
                if self.stop.wait(timeout=WATCH_S):
                    self.cancel.set()
                    return
            except Exception:  # scheduler gone: the task's own fate decides, not this thread
                return

    def close(self) -> None:
        self.done.set()


def run_task(
    spec_path: str, options: RunOptions, unit: WorkUnit, stop: str | None = None
) -> dict[str, Any]:
    """On a worker: run one unit through the group loop; its summary for the client to merge.

    `stop` names the run's Dask `Event`: once it is set the loop stops after its batch in flight
    (finished masks stay, staged ones are dropped), and a task not yet started does nothing.
    """
    from distributed import get_worker  # optional extra, present on every worker

    worker = get_worker()
    started = time.perf_counter()
    before = {id(handle) for handle in loaded_models()}

    def forward(event: dict[str, Any]) -> None:
        if event.get("type") in FORWARDED:
            worker.log_event(TOPIC, {**event, "worker": worker.address})

    watch = _Watch(stop)
    try:
        if watch.cancel.is_set():
            summary = RunSummary(spec_path=spec_path, cancelled=True)
        else:
            summary = run_inference(
                Project.open(spec_path),
                options_for(options, [unit]),
                on_event=forward,
                cancel=watch.cancel,
                label=f"sst-desktop cluster worker {worker.address}",
                save=False,
            )
    finally:
        watch.close()
    part = summary.to_dict()
    part["task"] = {
        "worker": worker.address,
        "group": unit.group_label,
        "chunk": f"{unit.chunk + 1}/{unit.chunks}",
        "targets": unit.weight,
        "task_s": round(time.perf_counter() - started, 3),
        # Models this task had to load: 0 once its worker process holds one.
        "model_loads": sum(id(handle) not in before for handle in loaded_models()),
        "pipeline_s": (summary.timings or {}).get("wall_s", 0.0),
        **(summary.timings or {}).get("setup", {}),
    }
    return part


def _connect(address: str) -> Any:
    """A Dask client for `address`, or one clear line saying what is missing."""
    try:
        from distributed import Client
    except ImportError:
        raise UserError(NEEDS_DISTRIBUTED) from None
    try:
        return Client(address, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise UserError(
            f"--scheduler {address}: no Dask scheduler answered ({exc}); start one with "
            "`dask scheduler` and pass the address it prints"
        ) from None


def merge_timings(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Stage timings of all tasks added up (seconds are worker seconds), plus one row per task."""
    timed = [p["timings"] for p in parts if p.get("timings", {}).get("stages")]
    images = sum(t["images"] for t in timed)
    wall = sum(t["wall_s"] for t in timed)
    cpu = sum(t["cpu_s"] for t in timed)
    stages = {}
    for name in STAGES:
        rows = [t["stages"][name] for t in timed]
        stages[name] = stage_row(
            sum(r["busy_s"] for r in rows),
            sum(r.get("cpu_s", 0.0) for r in rows),
            workers=max((r["workers"] for r in rows), default=1),
            wall_s=wall,
            images=images,
        )
    return {
        "images": images,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "images_per_s": round(images / wall, 3) if wall > 0 else None,
        "cpu_ms_per_image": per_image_ms(cpu, images),
        "stages": stages,
        "tasks": [p["task"] for p in parts if "task" in p],
    }


def timing_lines(summary: RunSummary) -> list[str]:
    """`--timings` of a cluster run: the stage table over all tasks, then model loads per worker."""
    timings = summary.timings or {}
    tasks = timings.get("tasks", [])
    lines = format_timings(timings)
    if not tasks:
        return lines
    workers = sorted({t["worker"] for t in tasks})
    loads = sum(t.get("model_loads", 0) for t in tasks)
    lines.insert(
        1,
        f"  (summed over {len(tasks)} task(s) on {len(workers)} worker(s): seconds "
        "and images/s are per worker)",
    )
    setup = sum(t.get("model_load_s", 0.0) + t.get("memory_s", 0.0) for t in tasks)
    busy = sum(t["task_s"] for t in tasks)
    lines.append(
        f"  model loaded {loads} time(s) on {len(workers)} worker(s); model loading and "
        f"reference memory {setup:.2f} s of {busy:.2f} s task time"
    )
    return lines


class _Merge:
    """The whole run's summary and progress, built from worker events and task summaries."""

    def __init__(
        self,
        options: RunOptions,
        spec_path: str,
        on_event: EventSink | None,
        plans: list[Any],
        project: Any,
    ) -> None:
        self.summary = RunSummary(
            spec_path=spec_path,
            started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            options=asdict(options),
        )
        self.on_event = on_event
        self.lock = threading.Lock()
        # What this run has to predict, and what was there before it started.
        self.targets = {str(f.pk) for p in plans for f in p.targets}
        self.total = len(self.targets)
        # Each target's prediction file as the run starts (None: absent): a file that is there
        # now and differs was written by this run, even by a task whose worker then died.
        self.before = {pk: _file_stamp(project.pred_mask_path(pk)) for pk in self.targets}
        self.done: set[str] = set()  # pks counted once, even when a retried task reports them
        self.written: dict[str, None] = {}  # pks written by this run, in order, once each
        self.parts: list[dict[str, Any]] = []
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
            if message.get("type") == "frame" and str(message.get("pk")) in self.targets:
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

    def add(self, part: dict[str, Any], unit: WorkUnit, project: Any) -> None:
        """Fold one task's summary in.

        A target the task skipped as already predicted, whose file is new since the run started,
        was written by this run's task on a worker that died: it counts as written, not skipped.
        """
        s = self.summary
        with self.lock:
            self.parts.append(part)
            s.cancelled = s.cancelled or bool(part.get("cancelled"))
            s.skipped += part["skipped"]
            self.written.update(dict.fromkeys(part["written_pks"]))
            s.busy += part["busy"]
            s.failed += part["failed"]
            s.flagged += part["flagged"]
            s.groups_skipped += [g for g in part["groups_skipped"] if g not in s.groups_skipped]
            s.groups_without_references += [
                g for g in part["groups_without_references"] if g not in s.groups_without_references
            ]
            if part["error"]:
                s.error = f"{s.error}; {part['error']}" if s.error else part["error"]
            if part.get("cancelled"):
                return  # its unfinished targets were neither written nor skipped
            others = {f["pk"] for f in part["failed"]} | {b["pk"] for b in part["busy"]}
            for pk in unit.pks:
                if (
                    pk in self.targets
                    and pk not in self.written
                    and pk not in others
                    and _file_stamp(project.pred_mask_path(pk)) not in (None, self.before[pk])
                ):
                    self.written[pk] = None
                    s.skipped -= 1
                    self.done.add(pk)

    def task_failed(self, unit: WorkUnit, exc: BaseException) -> None:
        reason = f"task failed: {type(exc).__name__}: {exc}"
        with self.lock:
            self.summary.failed += [{"pk": pk, "reason": reason} for pk in unit.pks]

    def finish(self, elapsed: float) -> RunSummary:
        s = self.summary
        s.written_pks = list(self.written)
        s.written = len(s.written_pks)
        s.elapsed_s = round(elapsed, 3)
        s.images_per_s = round(s.written / elapsed, 3) if elapsed > 0 else 0.0
        s.timings = merge_timings(self.parts)
        return s


def _file_stamp(path: Any) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _relay(cancel: threading.Event, stop: Any, finished: threading.Event) -> None:
    """On the client: pass a cancel (Ctrl-C) on to every task through the run's Dask `Event`."""
    while not finished.is_set():
        if cancel.wait(timeout=0.2):
            # The scheduler gone: there is no task left to stop.
            with contextlib.suppress(Exception):
                stop.set()
            return


def run_on_cluster(
    project: Any,
    address: str,
    options: RunOptions | None = None,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
) -> RunSummary:
    """Run the selected groups as tasks on the Dask scheduler at `address`; one merged summary."""
    try:
        from distributed import Event, as_completed  # the optional extra sst-desktop[cluster]
    except ImportError:
        raise UserError(NEEDS_DISTRIBUTED) from None

    options = options or RunOptions()
    cancel = cancel or threading.Event()
    spec_path = str(getattr(project, "spec_path", "") or "")
    if not spec_path:
        raise UserError("--scheduler needs the project's spec.json on a filesystem workers share")
    start = time.monotonic()
    clean_stale_files(project.spec.root)
    plans = plan_run(project, options)
    merge = _Merge(options, spec_path, on_event, plans, project)
    # As each task decides it (a task cancelled before it started reports no scope).
    merge.summary.reference_scope = options.reference_scope or project.spec.reference_scope
    client = _connect(address)
    finished = threading.Event()
    run_id = uuid.uuid4().hex[:8]
    stop = Event(f"sst-desktop-stop-{run_id}", client=client)
    futures: dict[Any, WorkUnit] = {}
    relay: threading.Thread | None = None
    aborted = False
    try:
        info = client.scheduler_info()
        workers = max(1, len(info.get("workers", {})))
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
        resources = task_resources(device, info.get("workers", {}).values())
        relay = threading.Thread(target=_relay, args=(cancel, stop, finished), daemon=True)
        relay.start()
        for index, unit in enumerate(units):
            future = client.submit(
                run_task,
                spec_path,
                options,
                unit,
                stop.name,
                key=f"sst-desktop-{run_id}-{index}",
                resources=resources,
                pure=False,
            )
            futures[future] = unit
        # After a cancel the running tasks stop after their batch and report what they wrote;
        # tasks not started yet return at once.
        for future in as_completed(list(futures)):
            try:
                merge.add(future.result(), futures[future], project)
            except Exception as exc:  # a task that failed (KilledWorker after retries, ...)
                merge.task_failed(futures[future], exc)
        client.unsubscribe_topic(TOPIC)
    except BaseException:
        # A second Ctrl-C or a lost scheduler: stop the tasks rather than leave them running.
        aborted = True
        cancel.set()
        with contextlib.suppress(Exception):
            stop.set()
            client.cancel(list(futures))
        raise
    finally:
        finished.set()
        if relay is not None:
            relay.join(timeout=2.0)  # it must not set the event after it is cleared
        if not aborted:
            # Every task has ended: the scheduler may forget the run's event. After an abort a
            # task may still be running (cancelling a future does not stop it), so the event
            # stays set for it; its name is unique to this run.
            with contextlib.suppress(Exception):
                stop.clear()
        client.close()
    if cancel.is_set():
        merge.summary.cancelled = True
    summary = merge.finish(time.monotonic() - start)
    save_summary(project.spec.root, summary)
    merge.progress()
    merge.emit({"type": "run_end", "summary": summary.to_dict()})
    return summary
