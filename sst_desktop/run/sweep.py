"""Label-efficiency sweep: mIoU as a function of the number of references per group.

For each seed and each k, every group draws k of its ground-truth frames as references (the same
`random.Random(seed).sample` over CSV order as reference sampling), propagates to its other
ground-truth frames in memory (nothing is written to pred_masks/) and compares with the ground
truth. mIoU per k is reported as mean ± standard deviation over seeds, overall and per group.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop.data.masks import apply_mask_mode, read_mask
from sst_desktop.data.project import mask_file_name, sample_references
from sst_desktop.errors import UserError
from sst_desktop.run.evaluate import (
    PartTotals,
    compare_masks,
    known_ids,
    mean_iou,
    read_gt,
    resolve_gt_dir,
    sum_parts,
)

DEFAULT_SEEDS = 3
ProgressFn = Callable[[int, int], None]


@dataclass
class SweepResult:
    """mIoU per k and seed, overall and per group (None where a group had no target for k)."""

    ks: list[int]
    seeds: list[int]
    groups: list[tuple[str, str]] = field(default_factory=list)  # (key, label) with ground truth
    overall: dict[int, list[float | None]] = field(default_factory=dict)  # k -> per seed
    per_group: dict[str, dict[int, list[float | None]]] = field(default_factory=dict)
    gt_frames: dict[str, int] = field(default_factory=dict)  # group key -> frames with GT
    skipped: list[str] = field(default_factory=list)  # notes: bad GT files, groups too small
    cancelled: bool = False

    @staticmethod
    def stats(values: Sequence[float | None]) -> tuple[float, float, int]:
        """(mean, std over seeds with ddof 0, number of seeds with a value)."""
        good = [v for v in values if v is not None and not math.isnan(v)]
        if not good:
            return math.nan, math.nan, 0
        return float(np.mean(good)), float(np.std(good)), len(good)

    def lines(self) -> list[str]:
        """The printed report: one row per k overall, then per group."""
        out = [
            f"Label-efficiency sweep: k = {', '.join(map(str, self.ks))} reference(s) per group, "
            f"seeds {', '.join(map(str, self.seeds))}",
            "",
            f"{'k':>3}  {'mIoU (mean ± std over seeds)':<30}",
        ]
        for k in self.ks:
            out.append(f"{k:>3}  {_pm(self.stats(self.overall.get(k, [])))}")
        for key, label in self.groups:
            out += ["", f"group {label} ({self.gt_frames.get(key, 0)} frames with ground truth)"]
            for k in self.ks:
                out.append(f"{k:>3}  {_pm(self.stats(self.per_group.get(key, {}).get(k, [])))}")
        out += [f"note: {text}" for text in self.skipped]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the app's sweep job result)."""

        def row(values: Sequence[float | None]) -> dict[str, Any]:
            mean, std, n = self.stats(values)
            return {
                "mean": None if math.isnan(mean) else round(mean, 6),
                "std": None if math.isnan(std) else round(std, 6),
                "seeds": n,
                "values": list(values),
            }

        return {
            "ks": self.ks,
            "seeds": self.seeds,
            "overall": {str(k): row(self.overall.get(k, [])) for k in self.ks},
            "groups": [
                {
                    "key": key,
                    "label": label,
                    "gt_frames": self.gt_frames.get(key, 0),
                    "by_k": {str(k): row(self.per_group[key].get(k, [])) for k in self.ks},
                }
                for key, label in self.groups
            ],
            "notes": self.skipped,
            "cancelled": self.cancelled,
        }


def _pm(stats: tuple[float, float, int]) -> str:
    mean, std, n = stats
    if n == 0:
        return "n/a (no group has a frame left to predict)"
    return f"{mean:.4f} ± {std:.4f}  ({n} seed{'s' if n != 1 else ''})"


def _gt_frames(project: Any, group: Any, gt_dir: Path, allowed, notes: list[str]) -> list[Any]:
    """The group's frames whose ground truth is readable and fits its image (CSV order)."""
    from sst_desktop.data.images import image_size

    frames = []
    for frame in group.frames:
        path = gt_dir / mask_file_name(frame.pk)
        if not path.is_file():
            continue
        try:
            read_gt(path, image_size(frame.image_path), allowed)
        except UserError as exc:
            notes.append(f"{frame.pk} left out: {exc}")
            continue
        frames.append(frame)
    return frames


def label_efficiency_sweep(
    project: Any,
    ks: Sequence[int],
    seeds: Sequence[int] | int = DEFAULT_SEEDS,
    gt_dir: Any = None,
    groups: list[str] | None = None,
    handle: Any = None,
    device: str | None = None,
    batch_size: int = 1,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> SweepResult:
    """Run the sweep (see the module docstring); `handle` is a loaded SAM2 model or None to load."""
    from sst_desktop.data.images import load_model_input
    from sst_desktop.engine.propagation import build_reference_memory, propagate
    from sst_desktop.run.runner import select_groups

    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UserError("--sweep needs numbers of references of 1 or more, e.g. --sweep 1 2 3 5")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise UserError("--seeds must be 1 or more")
    gt_path = resolve_gt_dir(project, gt_dir)
    spec = project.spec
    mode = spec.mask_mode
    allowed = known_ids(project)
    result = SweepResult(ks=ks, seeds=seed_list)
    cancel = cancel or threading.Event()

    plan = []
    for group in select_groups(project, groups):
        frames = _gt_frames(project, group, gt_path, allowed, result.skipped)
        if not frames:
            continue
        key = str(group.key)
        result.groups.append((key, str(group.label)))
        result.gt_frames[key] = len(frames)
        result.per_group[key] = {k: [] for k in ks}
        plan.append((key, frames))
    if not plan:
        raise UserError(f"no frame of this project has a ground-truth mask in {gt_path}")
    for key, frames in plan:
        too_big = [k for k in ks if k >= len(frames)]
        if too_big:
            result.skipped.append(
                f"group {dict(result.groups)[key]}: k = {', '.join(map(str, too_big))} leaves no "
                f"frame to predict ({len(frames)} with ground truth)"
            )
    total = sum(len(f) - k for _, f in plan for k in ks if k < len(f)) * len(seed_list)
    done = 0

    def gt_of(frame: Any) -> np.ndarray:
        mask = read_mask(gt_path / mask_file_name(frame.pk))
        return apply_mask_mode(mask, mode, name=str(frame.pk))

    if handle is None:
        from sst_desktop.engine.sam2_model import get_model

        handle = get_model(
            spec.sam2,
            device=device or spec.device,
            checkpoint=spec.checkpoint,
            image_size=spec.image_size,
        )
    for k in ks:
        result.overall[k] = []
    for seed in seed_list:
        for k in ks:
            seed_parts: list[dict[int, PartTotals]] = []
            for key, frames in plan:
                if cancel.is_set():
                    result.cancelled = True
                    return result
                if k >= len(frames):
                    result.per_group[key][k].append(None)
                    continue
                refs = sample_references(frames, k, seed)
                chosen = {str(f.pk) for f in refs}
                references, names = [], []
                for frame in refs:
                    mask = gt_of(frame)
                    if mask.any():  # an empty ground truth cannot condition SAM2
                        # At the model size: the same model input, no full-size array kept.
                        image = load_model_input(frame.image_path, handle.image_size)
                        references.append((image, mask))
                        names.append(str(frame.pk))
                targets = [f for f in frames if str(f.pk) not in chosen]
                group_parts: list[dict[int, PartTotals]] = []
                if references:
                    memory = build_reference_memory(handle, references, names=names)
                    del references
                    loaders = (
                        (
                            str(f.pk),
                            functools.partial(load_model_input, f.image_path, handle.image_size),
                        )
                        for f in targets
                    )
                    by_pk = {str(f.pk): f for f in targets}
                    for res in propagate(handle, memory, loaders, batch_size=batch_size):
                        done += 1
                        if res.error is None:
                            group_parts.append(compare_masks(res.mask, gt_of(by_pk[str(res.key)])))
                        if on_progress is not None:
                            on_progress(done, total)
                        if cancel.is_set():
                            break
                else:
                    done += len(targets)
                value = mean_iou(sum_parts(group_parts)) if group_parts else None
                result.per_group[key][k].append(value)
                seed_parts.extend(group_parts)
            result.overall[k].append(mean_iou(sum_parts(seed_parts)) if seed_parts else None)
    return result
