"""The propagation run shared by the CLI and the GUI: plan, claim, one group after another,
summary. The pieces live beside it: `planning` (what to do), `group_loop` (one group's
prediction), `tally` (summary and events), `dry_run` (the check without the model); the names
callers use are importable from here."""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import time
from dataclasses import asdict
from typing import Any

# engine.sam2_model imports no torch at module level; called through the module so a test's
# stand-in for get_model() is the one used.
from sst_desktop.data.table import group_title
from sst_desktop.engine import sam2_model
from sst_desktop.run.dry_run import DryRunReport, dry_run
from sst_desktop.run.events import EventSink
from sst_desktop.run.group_loop import GroupLoop
from sst_desktop.run.locks import FrameClaims, clean_stale_files
from sst_desktop.run.pipeline import PipelineSizes, StageTimes
from sst_desktop.run.planning import GroupPlan, RunOptions, plan_run, select_groups
from sst_desktop.run.references import ReferenceSets
from sst_desktop.run.tally import PROGRESS_MIN_INTERVAL_S, RunSummary, RunTally, save_summary

__all__ = [
    "PROGRESS_MIN_INTERVAL_S",
    "DryRunReport",
    "EventSink",
    "GroupPlan",
    "RunOptions",
    "RunSummary",
    "dry_run",
    "plan_run",
    "run_inference",
    "save_summary",
    "select_groups",
]


class _Run:
    """One `run_inference` call: plans, claims each group's targets, hands them to the group
    loop, and saves the summary whatever ends the run."""

    def __init__(
        self,
        project: Any,
        options: RunOptions,
        on_event: EventSink | None,
        cancel: threading.Event | None,
        label: str = "",
        save: bool = True,
    ) -> None:
        self.project = project
        self.save = save
        self.claims: FrameClaims | None = FrameClaims(project.spec.root, label=label)
        self.spec = project.spec
        self.options = options
        summary = RunSummary(
            spec_path=str(project.spec_path or ""),
            started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            options=asdict(options),
        )
        self.tally = RunTally(summary, on_event, cancel)
        self.summary = summary
        self.handle: Any = None
        self.sizes = PipelineSizes.for_machine(batch_size=options.batch_size)
        self.timings = StageTimes(
            {"read": self.sizes.read_workers, "write": self.sizes.write_workers}
        )

    def download_progress(self, done: int, total: int | None) -> None:
        """Forward checkpoint download progress (first use of a model) as events."""
        self.tally.emit({"type": "download", "done": done, "total": total})

    def model(self) -> Any:
        """The SAM2 handle, loaded on first need (a fully resumed run never loads it)."""
        if self.handle is None:
            device = self.options.device or self.spec.device
            self.tally.emit(
                {"type": "model_load", "variant": str(self.spec.sam2), "device": device}
            )
            started = time.perf_counter()
            self.handle = sam2_model.get_model(
                self.spec.sam2,
                device=device,
                checkpoint=self.spec.checkpoint,
                image_size=self.spec.image_size,
                progress=self.download_progress,
            )
            # Not a pipeline stage: kept apart in the summary (a cluster task's overhead).
            self.timings.add("model_load", time.perf_counter() - started, count=0)
        return self.handle

    def run(self) -> RunSummary:
        """Run every planned group; the summary is saved even when an exception ends the run."""
        tally = self.tally
        start = time.monotonic()
        # Only dead writers' temp files: another run of this project may be writing right now.
        clean_stale_files(self.spec.root)
        plans = plan_run(self.project, self.options)
        scope = self.options.reference_scope or self.spec.reference_scope
        self.summary.reference_scope = scope
        # Refuses a shared set over the limit before any model work.
        self.refs = ReferenceSets(self.project, scope, on_bad=tally.bad_reference)
        with_refs = [p for p in plans if self.refs.frames_for(p.references)]
        tally.total = sum(len(p.targets) for p in with_refs)
        self.summary.skipped = sum(p.skipped_existing for p in with_refs)
        tally.emit(
            {
                "type": "run_start",
                "groups": len(plans),
                "targets": tally.total,
                "skipped": self.summary.skipped,
            }
        )
        loop = GroupLoop(
            self.project,
            self.options,
            tally,
            self.refs,
            model=self.model,
            sizes=self.sizes,
            timings=self.timings,
        )
        try:
            self.open_claims()
            try:
                for plan in plans:
                    if tally.cancel.is_set():
                        self.summary.cancelled = True
                        break
                    self.run_group(plan, loop)
            finally:
                if self.claims is not None:
                    self.claims.close()
            if tally.cancel.is_set():
                self.summary.cancelled = True
        except BaseException as exc:
            # Keep a record of what was done before a user error (e.g. no checkpoint) or Ctrl-C.
            self.summary.error = str(exc) or type(exc).__name__
            self.finish(start)
            raise
        self.finish(start)
        return self.summary

    def open_claims(self) -> None:
        """Start claiming frames; where runs/active/ cannot be written, run unshared and say so."""
        try:
            self.claims.open()
        except OSError as exc:
            self.claims = None
            note = (
                f"frames not claimed ({exc.strerror or exc}): another run of this project at the "
                "same time could predict the same frames"
            )
            self.summary.error = f"{self.summary.error}; {note}" if self.summary.error else note

    def claim_targets(self, plan: GroupPlan) -> None:
        """Keep only the targets no other live run is predicting; report the others as skipped."""
        if self.claims is None:
            return
        try:
            result = self.claims.claim(str(f.pk) for f in plan.targets)
        except OSError:
            return  # disk full now: the writes will fail and say so; no need to stop here
        if not result.busy:
            return
        plan.targets = [f for f in plan.targets if str(f.pk) not in result.busy]
        for pk, owner in result.busy.items():
            self.tally.busy(pk, owner, str(plan.group.key))
        self.tally.progress()

    def finish(self, start: float) -> None:
        """Fill in times and rates, save the summary (unless the caller does) and say it ended."""
        tally = self.tally
        elapsed = time.monotonic() - start
        self.summary.elapsed_s = round(elapsed, 3)
        rate_elapsed = time.monotonic() - tally.rate_start if tally.rate_start else 0.0
        self.summary.images_per_s = (
            round(self.summary.written / rate_elapsed, 3) if rate_elapsed > 0 else 0.0
        )
        self.summary.timings = self.timings.to_dict(images=self.summary.written)
        busy = self.timings.busy
        self.summary.timings["setup"] = {
            "model_load_s": round(busy.get("model_load", 0.0), 3),
            "memory_s": round(busy.get("memory", 0.0), 3),
        }
        tally.progress(force=True)
        if self.save:
            save_summary(self.spec.root, self.summary)
        tally.emit({"type": "run_end", "summary": self.summary.to_dict()})

    def run_group(self, plan: GroupPlan, loop: GroupLoop) -> None:
        """Skip a group without references, report its done targets, claim and predict the rest."""
        group = plan.group
        label, key = str(group.label), str(group.key)
        if not self.refs.frames_for(plan.references):
            self.summary.groups_without_references.append(label)
            title = group_title(list(group.values.values()))
            self.tally.skip_group(key, label, "no reference masks", title=title)
            return
        for pk in plan.existing:
            self.tally.frame(pk, key, "skipped", "prediction already there")
        if not plan.targets:
            return  # everything already predicted; no need to touch the model
        self.claim_targets(plan)
        if not plan.targets:
            return
        try:
            loop.predict(plan)
        finally:
            if self.claims is not None:
                with contextlib.suppress(OSError):  # a stale claim is dropped when we exit
                    self.claims.release()


def run_inference(
    project: Any,
    options: RunOptions | None = None,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
    label: str = "",
    save: bool = True,
) -> RunSummary:
    """Predict every target of the selected groups, writing `pred_masks/{pk}.png` as results arrive.

    Frames another live run of the project is predicting are skipped (see `run.locks`); `label`
    names this run to the others (e.g. "sst-desktop --infer"); `save=False` leaves saving the
    summary to the caller (a cluster task's summary is merged into the whole run's).
    """
    return _Run(project, options or RunOptions(), on_event, cancel, label=label, save=save).run()
