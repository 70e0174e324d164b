"""What a run will do before it does it: the options, the selected groups, and per group its
references, its targets and the predictions already there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sst_desktop.data import mask_state
from sst_desktop.data.images import image_size
from sst_desktop.data.mask_files import mask_file_name
from sst_desktop.data.masks import mask_file_problem
from sst_desktop.errors import UserError


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
        """How many targets were left out because their prediction is already there."""
        return len(self.existing)


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
    try:
        size = image_size(frame.image_path)
    except UserError:
        return None  # an unreadable image fails its frame in the run anyway; keep the mask
    return mask_file_problem(project.pred_mask_path(frame.pk), size)
