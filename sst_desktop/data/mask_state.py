"""What a frame's masks make it: a reference, a prediction (current or stale) or still to do.

One rule for every count and progress bar: a frame with a reference mask is a reference and is
never also counted as a prediction, even when an older prediction file is still there. A
prediction is *stale* when it is older than the newest reference mask it was predicted from: of
its group, or of the whole project when the project's `reference_scope` is "all". It was made
before that reference existed (or changed), so the next run of the group predicts it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sst_desktop.data.mask_files import mask_file_name, mask_times


@dataclass
class MaskScan:
    """Mask modification times of one project, read once and shared by every group."""

    refs: dict[str, int]
    preds: dict[str, int]

    @classmethod
    def of(cls, project: Any) -> MaskScan:
        """Scan a project's `ref_masks/` and `pred_masks/`."""
        spec = project.spec
        return cls(refs=mask_times(spec.ref_masks_dir), preds=mask_times(spec.pred_masks_dir))


@dataclass
class GroupState:
    """The frames of one group by state (pks, CSV order) and their counts."""

    images: int = 0
    references: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)  # current predictions, no reference
    stale: list[str] = field(default_factory=list)  # predictions older than the newest reference

    def counts(self) -> dict[str, int]:
        """{images, refs, preds, stale}: `preds` counts current and stale predictions once each."""
        return {
            "images": self.images,
            "refs": len(self.references),
            "preds": len(self.predicted) + len(self.stale),
            "stale": len(self.stale),
        }


def scope_of(project: Any) -> str:
    """Where a project's predictions take their references from: "group" or "all"."""
    return project.spec.reference_scope or "group"


def group_state(frames: Sequence[Any], scan: MaskScan, scope: str = "group") -> GroupState:
    """Classify a group's frames (objects with `.pk`) against one scan; `scope` "all" compares
    predictions with the newest reference of the whole scan (a shared reference set)."""
    names = [(str(f.pk), mask_file_name(f.pk)) for f in frames]
    if scope == "all":
        ref_times = list(scan.refs.values())
    else:
        ref_times = [scan.refs[n] for _, n in names if n in scan.refs]
    newest_ref = max(ref_times) if ref_times else None
    state = GroupState(images=len(names))
    for pk, name in names:
        if name in scan.refs:
            state.references.append(pk)
        elif name in scan.preds:
            stale = newest_ref is not None and scan.preds[name] < newest_ref
            (state.stale if stale else state.predicted).append(pk)
    return state


def project_counts(project: Any, groups: Iterable[Any] | None = None) -> dict[str, int]:
    """Summed counts over some (None = all) groups of a project, from one scan."""
    scan = MaskScan.of(project)
    scope = scope_of(project)
    total = {"images": 0, "refs": 0, "preds": 0, "stale": 0}
    for group in project.groups() if groups is None else groups:
        for key, value in group_state(group.frames, scan, scope).counts().items():
            total[key] += value
    return total


def stale_predictions(
    project: Any, group: Any, scan: MaskScan | None = None, scope: str | None = None
) -> set[str]:
    """Pks of the group's stale predictions (see the module docstring); `scope` defaults to the
    project's."""
    group = project.group(group) if isinstance(group, str) else group
    scan = scan or MaskScan.of(project)
    return set(group_state(group.frames, scan, scope or scope_of(project)).stale)


def stale_mask_names(
    project: Any, group: Any, scan: MaskScan | None = None, scope: str | None = None
) -> set[str]:
    """Mask file names of the group's stale predictions (what a run predicts again)."""
    return {mask_file_name(pk) for pk in stale_predictions(project, group, scan, scope)}
