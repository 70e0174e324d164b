"""Split a run's groups into work units (groups or chunks of targets) and into N balanced shards.

The split depends only on the project's CSV and its reference masks, never on which predictions
exist, so N processes started at any time (a SLURM array) compute the same shards and cover every
target exactly once; each shard then runs the ordinary group loop, with its resume rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from sst_desktop.errors import UserError

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class WorkUnit:
    """A group, or a chunk of its targets: what one shard or one cluster task predicts."""

    group_key: str
    group_label: str
    pks: tuple[str, ...]  # target primary keys of this unit, in CSV order
    chunk: int = 0  # 0-based chunk index within its group
    chunks: int = 1  # how many chunks the group was cut into
    order: int = 0  # the group's position in the project, for stable ordering

    @property
    def weight(self) -> int:
        return len(self.pks)


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N) with 0 <= I < N; anything else is a user error naming the fix."""
    match = _SHARD_RE.match(text or "")
    if not match:
        raise UserError(f"--shard {text!r}: write it as I/N, e.g. 0/4 for the first of 4 shards")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UserError(
            f"--shard {text}: I must be from 0 to N-1 and N at least 1 (e.g. 0/{max(count, 1)})"
        )
    return index, count


def work_units(project: Any, options: Any, max_targets: int | None = None) -> list[WorkUnit]:
    """The selected groups as units, each group cut into chunks of at most `max_targets` targets.

    Targets are a group's frames without a reference mask, whether predicted already or not.
    """
    from sst_desktop.run.runner import plan_run

    # overwrite=True: a plan that ignores pred_masks/, identical in every process at any time.
    plans = plan_run(project, replace(options, overwrite=True, max_frames=None, frames=None))
    units: list[WorkUnit] = []
    for order, plan in enumerate(plans):
        key, label = str(plan.group.key), str(plan.group.label)
        pks = tuple(str(f.pk) for f in plan.targets)
        pieces = 1
        if max_targets and len(pks) > max_targets:
            pieces = math.ceil(len(pks) / max_targets)
        # Near-equal consecutive chunks: sizes differ by at most one.
        base, extra = divmod(len(pks), pieces)
        start = 0
        for index in range(pieces):
            size = base + (1 if index < extra else 0)
            units.append(WorkUnit(key, label, pks[start : start + size], index, pieces, order))
            start += size
    return units


def split_shards(units: list[WorkUnit], count: int) -> list[list[WorkUnit]]:
    """Deal units to `count` shards, largest first to the least loaded (ties: lowest index)."""
    shards: list[list[WorkUnit]] = [[] for _ in range(count)]
    loads = [0] * count
    for unit in sorted(units, key=lambda u: (-u.weight, u.order, u.chunk)):
        target = min(range(count), key=lambda i: (loads[i], i))
        shards[target].append(unit)
        loads[target] += unit.weight
    for shard in shards:
        shard.sort(key=lambda u: (u.order, u.chunk))  # run in project order
    return shards


def plan_shards(project: Any, options: Any, count: int) -> list[list[WorkUnit]]:
    """All `count` shards of the selected groups, balanced by target images.

    A group with more targets than the fair share (all targets / count, rounded up) is cut into
    chunks of at most that many targets.
    """
    units = work_units(project, options)
    total = sum(u.weight for u in units)
    fair = math.ceil(total / count) if total else None
    if fair is not None and any(u.weight > fair for u in units):
        units = work_units(project, options, max_targets=fair)
    return split_shards(units, count)


def options_for(options: Any, units: list[WorkUnit], shard: str | None = None) -> Any:
    """Run options restricted to these units' groups and targets (the ordinary group loop)."""
    keys = list(dict.fromkeys(u.group_key for u in units))
    frames = [pk for u in units for pk in u.pks]
    # No units: groups=None with an empty frame list plans nothing (not every group).
    return replace(options, groups=keys or None, frames=frames, shard=shard)


def shard_plan_lines(shards: list[list[WorkUnit]], index: int) -> list[str]:
    """Human-readable plan of shard `index`: its units, and its load among all shards."""
    count = len(shards)
    loads = [sum(u.weight for u in s) for s in shards]
    total = sum(loads)
    mine = shards[index]
    lines = [
        f"Shard {index}/{count}: {len(mine)} unit(s), {loads[index]} of {total} target(s) "
        f"(shard loads {min(loads)} to {max(loads)})"
    ]
    for unit in mine:
        part = f", chunk {unit.chunk + 1} of {unit.chunks}" if unit.chunks > 1 else ""
        lines.append(f"  group {unit.group_label}{part}: {unit.weight} target(s)")
    if not mine:
        lines.append("  nothing to do: more shards than units of work")
    return lines
