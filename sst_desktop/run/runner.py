"""The propagation run shared by the CLI and the GUI: groups, resume, bad frames, flags, summary."""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop import fileio
from sst_desktop.errors import UserError, describe_error
from sst_desktop.run.events import EventSink, RunEvent
from sst_desktop.run.locks import FrameClaims, clean_stale_files
from sst_desktop.run.pipeline import (
    PILLOW_BLOCKS_PER_READER,
    MaskWriter,
    PipelineSizes,
    StageTimes,
    pillow_block_cache,
)
from sst_desktop.run.progress import rate
from sst_desktop.run.references import ReferenceSets, shared_set_report

# Progress events are throttled so a GUI poll or a terminal is not flooded on fast GPUs.
PROGRESS_MIN_INTERVAL_S = 0.25


@dataclass
class RunOptions:
    """What to run: batch size, per-group target limit, overwrite, group filter, device override."""

    batch_size: int = 1
    max_frames: int | None = None
    overwrite: bool = False
    groups: list[str] | None = None  # group keys or labels; None = all groups
    device: str | None = None  # overrides the spec's device
    reference_scope: str | None = None  # overrides the spec's reference_scope ("group" | "all")
    # Opt-in: JPEGs decoded at a reduced DCT scale (faster, not pixel-identical to the exact path).
    fast_decode: bool = False
    # Only these targets (a shard's or a cluster task's share, see run/shards.py); None = all.
    frames: list[str] | None = None
    shard: str | None = None  # "I/N" when this run is one shard, recorded in the summary


@dataclass
class RunSummary:
    """Outcome of a run; saved as JSON under `root/runs/`."""

    spec_path: str = ""
    started_at: str = ""
    written: int = 0
    skipped: int = 0  # targets whose prediction already existed
    busy: list[dict[str, str]] = field(default_factory=list)  # {pk, by}: another run had them
    failed: list[dict[str, str]] = field(default_factory=list)  # {pk, reason}
    groups_without_references: list[str] = field(default_factory=list)  # labels
    reference_scope: str = "group"  # "all": every group used the project's shared references
    groups_skipped: list[dict[str, str]] = field(default_factory=list)  # {key, label, reason}
    flagged: list[dict[str, Any]] = field(default_factory=list)  # {pk, reasons}
    written_pks: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    images_per_s: float = 0.0
    cancelled: bool = False
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    summary_path: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)  # per stage, see run.pipeline

    @property
    def ok(self) -> bool:
        """True when nothing failed (groups without references are not failures)."""
        return not self.failed and not self.error

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass
class GroupPlan:
    """One group's work: its references, the targets to predict, how many were already done."""

    group: Any
    references: list[Any]
    targets: list[Any]
    existing: list[str]  # pks whose prediction is already there (skipped unless overwrite)
    # (pk, reason): a file in pred_masks/ that is no valid ID mask of its image; predicted again
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def skipped_existing(self) -> int:
        return len(self.existing)


@dataclass
class DryRunReport:
    """Findings of a dry run: report lines, problems (pk or None, text), warnings."""

    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str | None, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing would fail."""
        return not self.problems

    @property
    def failing_pks(self) -> list[str]:
        """Primary keys with at least one problem, in the order found, without repeats."""
        return list(dict.fromkeys(pk for pk, _ in self.problems if pk is not None))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "ok": self.ok,
            "lines": self.lines,
            "problems": [{"pk": pk, "reason": text} for pk, text in self.problems],
            "warnings": self.warnings,
            "failing_pks": self.failing_pks,
        }


def select_groups(project: Any, wanted: list[str] | None) -> list[Any]:
    """The project's groups filtered by keys or labels, in project order; unknown names are errors."""
    groups = list(project.groups())
    if not wanted:
        return groups
    by_name: dict[str, Any] = {}
    by_label: dict[str, list[Any]] = {}
    for group in groups:
        by_name.setdefault(str(group.key), group)
        by_label.setdefault(str(group.label), []).append(group)
    for label, same in by_label.items():
        by_name.setdefault(label, same[0])
    for name in wanted:
        same = by_label.get(name, [])
        if name not in {str(g.key) for g in groups} and len(same) > 1:
            keys = ", ".join(str(g.key) for g in same)
            raise UserError(
                f"group label {name!r} names {len(same)} groups ({keys}): select by key instead"
            )
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        known = ", ".join(str(g.label) for g in groups[:10]) + (" ..." if len(groups) > 10 else "")
        raise UserError(
            f"unknown group {unknown[0]!r}: use a group key or label of this project ({known})"
        )
    chosen = {id(by_name[name]) for name in wanted}
    return [g for g in groups if id(g) in chosen]


def plan_run(project: Any, options: RunOptions) -> list[GroupPlan]:
    """Decide per group which frames are references, which to predict and which are done."""
    from sst_desktop.data import mask_state
    from sst_desktop.data.project import mask_file_name

    # One listing of each mask folder for the whole run: no per-frame stat, no per-group listing.
    ref_names = project.mask_names("ref")
    pred_names = set() if options.overwrite else project.mask_names("pred")
    plans = []
    scan = None if options.overwrite else mask_state.MaskScan.of(project)
    scope = options.reference_scope or mask_state.scope_of(project)
    only = None if options.frames is None else set(options.frames)
    for group in select_groups(project, options.groups):
        references, targets, existing, invalid = [], [], [], []
        # Predictions older than the group's newest reference are made again with it.
        stale = set() if scan is None else mask_state.stale_mask_names(project, group, scan, scope)
        for frame in group.frames:  # CSV order, as project.reference_frames()
            name = mask_file_name(frame.pk)
            if name in ref_names:
                references.append(frame)
                continue
            if only is not None and str(frame.pk) not in only:
                continue  # another shard's or task's target
            if name in pred_names and name not in stale:
                problem = _prediction_problem(project, frame)
                if problem is None:
                    existing.append(str(frame.pk))
                    continue
                invalid.append((str(frame.pk), problem))
            targets.append(frame)
        if only is not None and not targets and not existing:
            continue  # none of this group's targets is in this share
        if options.max_frames is not None:
            targets = targets[: max(0, options.max_frames)]
        plans.append(GroupPlan(group, references, targets, existing, invalid))
    return plans


def _prediction_problem(project: Any, frame: Any) -> str | None:
    """Why an existing prediction cannot count as done (read from headers), or None."""
    from sst_desktop.data.images import image_size
    from sst_desktop.data.masks import mask_file_problem

    try:
        size = image_size(frame.image_path)
    except UserError:
        return None  # an unreadable image fails its frame in the run anyway; keep the mask
    return mask_file_problem(project.pred_mask_path(frame.pk), size)


def _timestamp_name(runs_dir: Path) -> Path:
    """A fresh `runs/<UTC timestamp>.json` path that sorts chronologically."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = runs_dir / f"{stamp}.json"
    n = 1
    while path.exists():
        path = runs_dir / f"{stamp}-{n}.json"
        n += 1
    return path


def save_summary(root: str | Path, summary: RunSummary) -> None:
    """Save `summary` as `root/runs/<UTC time>.json`; a failure is noted in its `error`."""
    runs_dir = Path(root) / "runs"
    try:
        path = _timestamp_name(runs_dir)
        summary.summary_path = str(path)
        fileio.atomic_write_json(path, summary.to_dict())
    except OSError as exc:
        # Disk full or read-only: the outcome still reaches the caller, with what was lost;
        # raising here would also hide the exception that may have ended the run.
        summary.summary_path = None
        note = f"could not save the run summary in {runs_dir}: {exc.strerror or exc}"
        summary.error = f"{summary.error}; {note}" if summary.error else note
    else:
        from sst_desktop.data.review import update_flags_index

        # GUI flag listings then start from runs/flags.index, not a read of every summary;
        # a failure here only costs a later rebuild.
        with contextlib.suppress(OSError):
            update_flags_index(root)


class _Run:
    """State of one `run_inference` call (kept in an object so helpers stay small)."""

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
        self.emit_fn = on_event
        self.cancel = cancel or threading.Event()
        self.summary = RunSummary(
            spec_path=str(getattr(project, "spec_path", "") or ""),
            started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            options=asdict(options),
        )
        self.handle: Any = None
        self.done = 0
        self.total = 0
        self.rate_start: float | None = None
        self.last_progress = 0.0
        self.sizes = PipelineSizes.for_machine(batch_size=options.batch_size)
        self.timings = StageTimes(
            {"read": self.sizes.read_workers, "write": self.sizes.write_workers}
        )

    def emit(self, event: RunEvent) -> None:
        if self.emit_fn is not None:
            self.emit_fn(event)

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_MIN_INTERVAL_S:
            return
        self.last_progress = now
        ips = eta = None
        if self.rate_start is not None:
            ips, eta = rate(self.done, self.total - self.done, now - self.rate_start)
        self.emit(
            {"type": "progress", "done": self.done, "total": self.total, "ips": ips, "eta_s": eta}
        )

    def fail(self, pk: str, reason: str, group: Any) -> None:
        self.summary.failed.append({"pk": str(pk), "reason": reason})
        self.done += 1
        self.emit(
            {
                "type": "frame",
                "pk": str(pk),
                "group": str(group.key),
                "status": "failed",
                "reason": reason,
                "flags": [],
            }
        )
        self.progress()

    def download_progress(self, done: int, total: int | None) -> None:
        """Forward checkpoint download progress (first use of a model) as events."""
        self.emit({"type": "download", "done": done, "total": total})

    def model(self) -> Any:
        """The SAM2 handle, loaded on first need (a fully resumed run never loads it)."""
        if self.handle is None:
            from sst_desktop.engine.sam2_model import get_model

            device = self.options.device or self.spec.device
            self.emit({"type": "model_load", "variant": str(self.spec.sam2), "device": device})
            self.handle = get_model(
                self.spec.sam2,
                device=device,
                checkpoint=self.spec.checkpoint,
                image_size=self.spec.image_size,
                progress=self.download_progress,
            )
        return self.handle

    def run(self) -> RunSummary:
        start = time.monotonic()
        # Only dead writers' temp files: another run of this project may be writing right now.
        clean_stale_files(self.spec.root)
        plans = plan_run(self.project, self.options)
        scope = self.options.reference_scope or self.spec.reference_scope
        self.summary.reference_scope = scope
        # Refuses a shared set over the limit before any model work.
        self.refs = ReferenceSets(self.project, scope, on_bad=self.bad_reference)
        with_refs = [p for p in plans if self.refs.frames_for(p.references)]
        self.total = sum(len(p.targets) for p in with_refs)
        self.summary.skipped = sum(p.skipped_existing for p in with_refs)
        self.emit(
            {
                "type": "run_start",
                "groups": len(plans),
                "targets": self.total,
                "skipped": self.summary.skipped,
            }
        )
        try:
            self.open_claims()
            try:
                for plan in plans:
                    if self.cancel.is_set():
                        self.summary.cancelled = True
                        break
                    self.run_group(plan)
            finally:
                if self.claims is not None:
                    self.claims.close()
            if self.cancel.is_set():
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
            self.summary.busy.append({"pk": pk, "by": owner})
            self.done += 1  # counted in the total; done for this run
            self.emit(
                {
                    "type": "frame",
                    "pk": pk,
                    "group": str(plan.group.key),
                    "status": "skipped",
                    "reason": f"another run is predicting it ({owner})",
                    "flags": [],
                }
            )
        self.progress()

    def finish(self, start: float) -> None:
        elapsed = time.monotonic() - start
        self.summary.elapsed_s = round(elapsed, 3)
        rate_elapsed = time.monotonic() - self.rate_start if self.rate_start else 0.0
        self.summary.images_per_s = (
            round(self.summary.written / rate_elapsed, 3) if rate_elapsed > 0 else 0.0
        )
        self.summary.timings = self.timings.to_dict(images=self.summary.written)
        self.progress(force=True)
        if self.save:
            save_summary(self.spec.root, self.summary)
        self.emit({"type": "run_end", "summary": self.summary.to_dict()})

    def run_group(self, plan: GroupPlan) -> None:
        group = plan.group
        label, key = str(group.label), str(group.key)
        if not self.refs.frames_for(plan.references):
            self.summary.groups_without_references.append(label)
            self.skip_group(key, label, "no reference masks")
            return
        for pk in plan.existing:
            self.emit(
                {
                    "type": "frame",
                    "pk": pk,
                    "group": key,
                    "status": "skipped",
                    "reason": "prediction already there",
                    "flags": [],
                }
            )
        if not plan.targets:
            return  # everything already predicted; no need to touch the model
        self.claim_targets(plan)
        if not plan.targets:
            return
        try:
            self.predict_group(plan)
        finally:
            if self.claims is not None:
                with contextlib.suppress(OSError):  # a stale claim is dropped when we exit
                    self.claims.release()

    def predict_group(self, plan: GroupPlan) -> None:
        group = plan.group
        label, key = str(group.label), str(group.key)
        loaded = self.refs.load(plan.references, key)
        if loaded is None:
            self.skip_group(key, label, "none of its reference masks is usable", plan.targets)
            return

        from sst_desktop.data.review import common_ids, low_confidence_flag, review_counts

        expected = common_ids(loaded.masks)
        labels = getattr(self.spec, "labels", None)
        # Every ID some reference holds: the model scoring one of them absent is worth a look.
        in_refs = set().union(*(set(np.unique(m).tolist()) - {0} for m in loaded.masks))

        def review(mask: Any, counts: list[int], scores: Any) -> list[str]:
            flags = review_counts(counts, expected, labels=labels)
            low = low_confidence_flag(mask, in_refs, scores, labels=labels)
            return [*flags, low] if low else flags

        self.emit(
            {
                "type": "group_start",
                "key": key,
                "label": label,
                "references": len(loaded.names),
                "targets": len(plan.targets),
                "skipped": plan.skipped_existing,
            }
        )
        handle = self.model()
        if self.rate_start is None:
            self.rate_start = time.monotonic()  # model loading does not count toward images/s

        from sst_desktop.engine.propagation import propagate

        remaining = {str(f.pk): f for f in plan.targets}
        sizes = self.sizes
        writer = MaskWriter(sizes.write_workers, sizes.write_pending, timings=self.timings)
        try:
            memory = self.refs.memory(handle, loaded)  # the shared set: encoded once per run
            blocks = PILLOW_BLOCKS_PER_READER * sizes.read_workers
            with self.timings.measure(), pillow_block_cache(blocks):
                results = propagate(
                    handle,
                    memory,
                    self.loaders(plan.targets, handle.image_size),
                    batch_size=self.options.batch_size,
                    prefetch=sizes.read_ahead,
                    loader_threads=sizes.read_workers,
                    timings=self.timings,
                )
                for result in results:
                    pk = str(result.key)
                    remaining.pop(pk, None)
                    if result.error is not None:
                        outcomes = writer.done(pk, error=result.error)
                    else:
                        scored = functools.partial(review, scores=result.object_scores)
                        job = functools.partial(self.write_job, pk, result.mask, scored)
                        outcomes = writer.submit(pk, job)
                    self.record(outcomes, group)
                    if self.cancel.is_set():
                        # Leaving the loop lets propagate() finish its batch in flight and stop;
                        # frames not yet written stay targets for the next run.
                        break
                results.close()  # stop reading ahead before waiting for the writers
                self.record(writer.drain(cancel=self.cancel.is_set()), group)
        except Exception as exc:
            # Masks already handed to the writer are finished and reported.
            self.record(writer.drain(cancel=self.cancel.is_set()), group)
            # An engine failure loses this group's unfinished frames, not the run.
            reason = f"engine error: {describe_error(exc)}"
            for pk in list(remaining):
                remaining.pop(pk)
                self.fail(pk, reason, group)
            self.summary.groups_skipped.append({"key": key, "label": label, "reason": reason})
        finally:
            # After Ctrl-C: wait for the writers, keep no half-decided file.
            for _, value, _ in writer.drain(cancel=True):
                if value is not None:
                    value[1].discard()
            writer.close()
        self.emit({"type": "group_end", "key": key, "label": label})

    def loaders(self, frames: list[Any], size: int) -> Iterator[tuple[str, Callable[[], Any]]]:
        """(pk, loader) per target; propagate() calls the loaders in its worker pool, so only a
        few images are in memory at once and an unreadable one comes back as that frame's error.
        A loader gives the target already at the model size: no full-size array is kept."""
        from sst_desktop.data.images import load_model_input

        for frame in frames:
            if self.cancel.is_set():
                return
            yield (
                str(frame.pk),
                functools.partial(
                    load_model_input, frame.image_path, size, fast=self.options.fast_decode
                ),
            )

    def write_job(self, pk: str, mask: Any, review: Callable) -> tuple[list[str], Any]:
        """Review flags (from one histogram of the mask) and the PNG, staged in a temp file
        beside its place; runs on the writer pool. `record` commits it, in target order."""
        from sst_desktop.data.masks import PRED_MASK_COMPRESS_LEVEL, id_counts, stage_mask

        flags = review(mask, id_counts(mask))
        try:
            staged = stage_mask(
                self.project.pred_mask_path(pk), mask, compress_level=PRED_MASK_COMPRESS_LEVEL
            )
        except Exception as exc:  # e.g. disk full: report the frame, try the next one
            raise _WriteFailed(f"could not write prediction: {exc}") from exc
        return flags, staged

    def record(self, outcomes: list[tuple[str, Any, BaseException | None]], group: Any) -> None:
        """Report finished frames in target order: commit and count the written ones, or fail.

        After a cancel nothing more is reported and staged files are dropped: those frames stay
        targets for the next run, as if the run had stopped right after the last one reported.
        """
        for pk, value, error in outcomes:
            if self.cancel.is_set():
                if value is not None:
                    value[1].discard()
                continue
            if error is not None:
                self.fail(pk, describe_error(error), group)
                continue
            flags, staged = value
            try:
                staged.commit()
            except OSError as exc:
                self.fail(pk, f"could not write prediction: {exc}", group)
                continue
            self.written(pk, flags, group)

    def written(self, pk: str, flags: list[str], group: Any) -> None:
        self.summary.written += 1
        self.summary.written_pks.append(pk)
        if flags:
            self.summary.flagged.append({"pk": pk, "reasons": flags})
        self.done += 1
        self.emit(
            {
                "type": "frame",
                "pk": pk,
                "group": str(group.key),
                "status": "written",
                "reason": None,
                "flags": flags,
            }
        )
        self.progress()

    def bad_reference(self, pk: str, reason: str, group_key: str) -> None:
        """A reference that cannot be used is reported and left out; the others still count."""
        self.summary.failed.append({"pk": pk, "reason": reason})
        # A frame event (not counted in progress: references are no targets).
        self.emit(
            {
                "type": "frame",
                "pk": pk,
                "group": group_key,
                "status": "failed",
                "reason": reason,
                "flags": [],
                "reference": True,
            }
        )

    def skip_group(self, key: str, label: str, reason: str, targets: list[Any] = ()) -> None:
        self.summary.groups_skipped.append({"key": key, "label": label, "reason": reason})
        # Its targets were counted in the total; count them as done so the ETA stays honest.
        self.done += len(targets)
        self.emit({"type": "group_skipped", "key": key, "label": label, "reason": reason})


class _WriteFailed(UserError):
    """A prediction that could not be written (its message is the frame's reason as it is)."""


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


def dry_run(project: Any, options: RunOptions | None = None, decode: bool = False) -> DryRunReport:
    """Check references and images without the model; `decode` fully decodes every image too."""
    from sst_desktop.data.images import image_size, load_image
    from sst_desktop.data.masks import apply_mask_mode, read_mask

    options = options or RunOptions()
    report = DryRunReport()
    spec = project.spec

    # Reference files whose name is no frame of the project would silently never be used.
    from sst_desktop.data.project import pk_from_mask_file_name

    known = {str(f.pk) for g in project.groups() for f in g.frames}
    ref_dir = project.mask_dir("ref")
    for name in sorted(project.mask_names("ref")):
        pk = pk_from_mask_file_name(name)
        if pk not in known:
            report.problems.append(
                (
                    pk,
                    f"{ref_dir / name}: no image has primary key {pk!r}; rename or delete the mask",
                )
            )

    # The model is not loaded, but a checkpoint that is not there would stop the real run.
    from sst_desktop.engine.checkpoints import find_checkpoint

    try:
        if find_checkpoint(spec.sam2, explicit=spec.checkpoint) is None:
            report.warnings.append(
                f"no local checkpoint for {spec.sam2}: the first run will download it"
            )
    except UserError as exc:
        report.problems.append((None, str(exc)))

    plans = plan_run(project, options)
    scope = options.reference_scope or spec.reference_scope
    shared, scope_lines, limit_problem = shared_set_report(project, scope)
    if limit_problem:
        report.problems.append((None, limit_problem))
    n_images = n_refs = 0
    for plan in plans:
        label = str(plan.group.label)
        if not (shared if shared is not None else plan.references):
            report.warnings.append(f"group {label}: no reference masks; it would be skipped")
        for pk, problem in plan.invalid:
            report.warnings.append(
                f"{project.pred_mask_path(pk)} is no valid prediction ({problem}): the run "
                "predicts it again"
            )
        only = None if options.frames is None else set(options.frames)
        for frame in plan.group.frames:
            pk = str(frame.pk)
            if only is not None and pk not in only and frame not in plan.references:
                continue  # another shard's target
            n_images += 1
            try:
                image_size(frame.image_path)
                if decode:
                    load_image(frame.image_path)
            except Exception as exc:
                # An ImageError already names the file; anything else gets the path added.
                text = describe_error(exc)
                if not isinstance(exc, UserError):
                    text = f"image {frame.image_path}: {text}"
                report.problems.append((pk, text))
                continue
    # The shared set is checked once, whichever groups were selected.
    ref_frames = shared if shared is not None else [f for p in plans for f in p.references]
    for frame in ref_frames:
        pk = str(frame.pk)
        n_refs += 1
        path = project.ref_mask_path(frame.pk)
        try:
            size = image_size(frame.image_path)
        except Exception as exc:
            if pk not in {found for found, _ in report.problems}:  # from a group not selected
                report.problems.append(
                    (pk, f"reference image {frame.image_path}: {describe_error(exc)}")
                )
            continue
        try:
            mask = read_mask(path, expected_size=size)
            if not mask.any():
                report.problems.append((pk, f"reference {path} is empty: label an object"))
                continue
            apply_mask_mode(mask, spec.mask_mode, name=str(path))
        except UserError as exc:
            report.problems.append((pk, f"reference {pk}: {exc}"))

    if n_images == 0:
        report.problems.append(
            (None, f"{spec.csv}: the project has no images: add rows to the CSV")
        )
    report.lines.append(
        f"Checked {n_images} image(s) in {len(plans)} group(s) and {n_refs} reference mask(s)"
        + (" (images fully decoded)" if decode else " (image headers)")
    )
    report.lines += scope_lines
    report.lines += [f"warning: {text}" for text in report.warnings]
    report.lines += [f"problem: {text}" for _, text in report.problems]
    if report.ok:
        report.lines.append("No problems found.")
    else:
        report.lines.append(
            f"{len(report.problems)} problem(s) in {len(report.failing_pks)} frame(s)"
        )
    return report
