"""One group's prediction: propagate from its loaded references over its targets, review each
mask, write the PNGs in target order, and report every target through the run's tally.

Contract: `GroupLoop.predict(plan)` reports each of `plan.targets` exactly once (written or
failed) unless the run is cancelled, in which case frames not yet reported stay targets for the
next run. An engine error loses this group's unfinished frames (failed, group skipped), never
the run; only BaseException (Ctrl-C) leaves it. The model is asked for only when a group has
usable references and targets, so a fully resumed run never loads it."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from sst_desktop.data.images import load_model_input
from sst_desktop.data.masks import id_counts, stage_prediction
from sst_desktop.data.review import common_ids, low_confidence_flag, review_counts
from sst_desktop.data.table import group_title

# engine.propagation imports no torch at module level; called through the module so a test's
# stand-in for propagate() is the one used.
from sst_desktop.engine import propagation
from sst_desktop.errors import UserError, describe_error
from sst_desktop.run.pipeline import (
    PILLOW_BLOCKS_PER_READER,
    MaskWriter,
    PipelineSizes,
    StageTimes,
    pillow_block_cache,
)
from sst_desktop.run.planning import GroupPlan, RunOptions
from sst_desktop.run.references import ReferenceSets
from sst_desktop.run.tally import RunTally


class _WriteFailed(UserError):
    """A prediction that could not be written (its message is the frame's reason as it is)."""


class GroupLoop:
    """Predicts the targets of one group after another with the run's model, pools and tally."""

    def __init__(
        self,
        project: Any,
        options: RunOptions,
        tally: RunTally,
        refs: ReferenceSets,
        model: Callable[[], Any],
        sizes: PipelineSizes,
        timings: StageTimes,
    ) -> None:
        self.project = project
        self.options = options
        self.tally = tally
        self.refs = refs
        self.model = model  # loads SAM2 on first call
        self.sizes = sizes
        self.timings = timings

    @property
    def cancelled(self) -> bool:
        """Whether the run was asked to stop."""
        return self.tally.cancel.is_set()

    def predict(self, plan: GroupPlan) -> None:
        """Predict `plan.targets` (already claimed) from `plan.references`; see the module contract."""
        tally = self.tally
        group = plan.group
        label, key = str(group.label), str(group.key)
        title = group_title(list(group.values.values()))  # as the screens name the group
        loaded = self.refs.load(plan.references, key)
        if loaded is None:
            reason = "none of its reference masks is usable"
            tally.skip_group(key, label, reason, plan.targets, title=title)
            return
        review = self.reviewer(loaded.masks)
        tally.emit(
            {
                "type": "group_start",
                "key": key,
                "label": label,
                "title": title,
                "references": len(loaded.names),
                "targets": len(plan.targets),
                "skipped": plan.skipped_existing,
            }
        )
        handle = self.model()
        tally.start_rate()

        remaining = {str(f.pk): f for f in plan.targets}
        sizes = self.sizes
        writer = MaskWriter(sizes.write_workers, sizes.write_pending, timings=self.timings)
        try:
            started = time.perf_counter()
            memory = self.refs.memory(handle, loaded)  # the shared set: encoded once per run
            self.timings.add("memory", time.perf_counter() - started, count=0)
            blocks = PILLOW_BLOCKS_PER_READER * sizes.read_workers
            with self.timings.measure(), pillow_block_cache(blocks):
                results = propagation.propagate(
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
                        job = functools.partial(
                            self.write_job, pk, result.mask, scored, counts=result.id_counts
                        )
                        outcomes = writer.submit(pk, job)
                    self.record(outcomes, group)
                    if self.cancelled:
                        # Leaving the loop lets propagate() finish its batch in flight and stop;
                        # frames not yet written stay targets for the next run.
                        break
                results.close()  # stop reading ahead before waiting for the writers
                self.record(writer.drain(cancel=self.cancelled), group)
        except Exception as exc:
            # Masks already handed to the writer are finished and reported.
            self.record(writer.drain(cancel=self.cancelled), group)
            # An engine failure loses this group's unfinished frames, not the run.
            reason = f"engine error: {describe_error(exc)}"
            for pk in list(remaining):
                remaining.pop(pk)
                tally.fail(pk, reason, group)
            tally.summary.groups_skipped.append({"key": key, "label": label, "reason": reason})
        finally:
            # After Ctrl-C: wait for the writers, keep no half-decided file.
            for _, value, _ in writer.drain(cancel=True):
                if value is not None:
                    value[1].discard()
            writer.close()
        tally.emit({"type": "group_end", "key": key, "label": label, "title": title})

    def reviewer(self, ref_masks: list[Any]) -> Callable[..., list[str]]:
        """The review of one predicted mask against this group's references: its flag texts."""
        expected = common_ids(ref_masks)
        labels = self.project.spec.labels
        # Every ID some reference holds: the model scoring one of them absent is worth a look.
        in_refs = set().union(*(set(np.unique(m).tolist()) - {0} for m in ref_masks))

        def review(counts: list[int], scores: Any) -> list[str]:
            flags = review_counts(counts, expected, labels=labels)
            low = low_confidence_flag(counts, in_refs, scores, labels=labels)
            return [*flags, low] if low else flags

        return review

    def loaders(self, frames: list[Any], size: int) -> Iterator[tuple[str, Callable[[], Any]]]:
        """(pk, loader) per target; propagate() calls the loaders in its worker pool, so only a
        few images are in memory at once and an unreadable one comes back as that frame's error.
        A loader gives the target already at the model size: no full-size array is kept."""
        for frame in frames:
            if self.cancelled:
                return
            yield (
                str(frame.pk),
                functools.partial(
                    load_model_input, frame.image_path, size, fast=self.options.fast_decode
                ),
            )

    def write_job(
        self, pk: str, mask: Any, review: Callable, counts: list[int] | None = None
    ) -> tuple[list[str], Any]:
        """Review flags (from the mask's pixels per ID: `counts`, or one histogram of the mask)
        and the PNG, staged in a temp file beside its place; runs on the writer pool. `record`
        commits it, in target order."""
        flags = review(counts if counts is not None else id_counts(mask))
        try:
            staged = stage_prediction(self.project.pred_mask_path(pk), mask)
        except Exception as exc:  # e.g. disk full: report the frame, try the next one
            raise _WriteFailed(f"could not write prediction: {exc}") from exc
        return flags, staged

    def record(self, outcomes: list[tuple[str, Any, BaseException | None]], group: Any) -> None:
        """Report finished frames in target order: commit and count the written ones, or fail.

        After a cancel nothing more is reported and staged files are dropped: those frames stay
        targets for the next run, as if the run had stopped right after the last one reported.
        """
        for pk, value, error in outcomes:
            if self.cancelled:
                if value is not None:
                    value[1].discard()
                continue
            if error is not None:
                self.tally.fail(pk, describe_error(error), group)
                continue
            flags, staged = value
            try:
                staged.commit()
            except OSError as exc:
                self.tally.fail(pk, f"could not write prediction: {exc}", group)
                continue
            self.tally.written(pk, flags, group)
