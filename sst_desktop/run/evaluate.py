"""Quality against ground truth: IoU and Dice per part, mIoU, per image and per group.

Definitions (also in the README): per part, intersection and union are summed over all evaluated
images; IoU of a part = sum of intersections / sum of unions; mIoU = mean IoU over the parts present
in the ground truth or the predictions (union > 0); Dice of a part = 2 * sum of intersections /
(sum of ground-truth pixels + sum of predicted pixels); the IoU of one image is the mean IoU over the
parts present in its ground truth or its prediction.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop import fileio
from sst_desktop.data import mask_files
from sst_desktop.data.images import image_size
from sst_desktop.data.labels import part_name
from sst_desktop.data.masks import read_mask
from sst_desktop.data.project import mask_file_name
from sst_desktop.errors import MaskError, UserError
from sst_desktop.run.planning import select_groups

MASK_SOURCES = ("pred", "ref")
ProgressFn = Callable[[int, int], None]


@dataclass
class PartTotals:
    """Pixel counts of one part summed over images."""

    intersection: int = 0
    union: int = 0
    gt: int = 0  # ground-truth pixels
    pred: int = 0  # predicted pixels
    images: int = 0  # images where the part is in the ground truth or the prediction

    def add(self, other: PartTotals) -> None:
        """Accumulate another image's (or group's) counts."""
        self.intersection += other.intersection
        self.union += other.union
        self.gt += other.gt
        self.pred += other.pred
        self.images += other.images

    @property
    def iou(self) -> float:
        """Intersection over union (nan when the part is in neither mask)."""
        return self.intersection / self.union if self.union else math.nan

    @property
    def dice(self) -> float:
        """2 |G ∩ P| / (|G| + |P|) (nan when the part is in neither mask)."""
        total = self.gt + self.pred
        return 2 * self.intersection / total if total else math.nan


def compare_masks(pred: np.ndarray, gt: np.ndarray) -> dict[int, PartTotals]:
    """Per-part counts of one prediction against its ground truth (same shape, uint8 IDs)."""
    if pred.shape != gt.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {gt.shape}")
    # One pass: a 256 x 256 table of (prediction ID, ground-truth ID) pixel counts.
    joint = np.bincount(
        pred.astype(np.int32).ravel() * 256 + gt.astype(np.int32).ravel(), minlength=65536
    ).reshape(256, 256)
    pred_area = joint.sum(axis=1)
    gt_area = joint.sum(axis=0)
    out: dict[int, PartTotals] = {}
    for part in np.nonzero((pred_area + gt_area)[1:])[0] + 1:
        part = int(part)
        inter = int(joint[part, part])
        p, g = int(pred_area[part]), int(gt_area[part])
        out[part] = PartTotals(intersection=inter, union=p + g - inter, gt=g, pred=p, images=1)
    return out


def mean_iou(parts: Mapping[int, PartTotals]) -> float:
    """Mean IoU over the parts present in the ground truth or the predictions (nan if none)."""
    values = [t.iou for t in parts.values() if t.union > 0]
    return float(np.mean(values)) if values else math.nan


def sum_parts(items: Iterable[Mapping[int, PartTotals]]) -> dict[int, PartTotals]:
    """Part counts summed over images."""
    total: dict[int, PartTotals] = {}
    for parts in items:
        for part, counts in parts.items():
            total.setdefault(part, PartTotals()).add(counts)
    return dict(sorted(total.items()))


@dataclass
class ImageScore:
    """One evaluated image."""

    pk: str
    group_key: str
    group_label: str
    parts: dict[int, PartTotals]

    @property
    def iou(self) -> float:
        """Mean IoU over the parts in this image's ground truth or prediction."""
        return mean_iou(self.parts)


@dataclass
class Evaluation:
    """The outcome of comparing a project's masks with ground truth."""

    masks: str
    gt_dir: str
    labels: dict[int, str] = field(default_factory=dict)
    images: list[ImageScore] = field(default_factory=list)
    groups: list[tuple[str, str]] = field(default_factory=list)  # (key, label) in project order
    without_gt: list[str] = field(default_factory=list)
    without_mask: list[str] = field(default_factory=list)  # GT present, no mask to evaluate
    errors: list[tuple[str, str]] = field(default_factory=list)  # (pk, reason)
    files: list[str] = field(default_factory=list)  # CSVs written

    @property
    def parts(self) -> dict[int, PartTotals]:
        """Counts per part over every evaluated image."""
        return sum_parts(i.parts for i in self.images)

    @property
    def miou(self) -> float:
        """mIoU over all evaluated images."""
        return mean_iou(self.parts)

    def group_parts(self, key: str) -> dict[int, PartTotals]:
        """Counts per part over one group's evaluated images."""
        return sum_parts(i.parts for i in self.images if i.group_key == key)

    def per_group(self) -> list[dict[str, Any]]:
        """mIoU and image count per group (groups with no evaluated image have mIoU None)."""
        out = []
        for key, label in self.groups:
            n = sum(1 for i in self.images if i.group_key == key)
            value = mean_iou(self.group_parts(key))
            out.append({"key": key, "label": label, "images": n, "miou": _num(value)})
        return out

    def final_line(self) -> str:
        """`mIoU: 0.xxxx (N images, K parts)`."""
        parts = [p for p, t in self.parts.items() if t.union > 0]
        value = self.miou
        text = "n/a" if math.isnan(value) else f"{value:.4f}"
        return f"mIoU: {text} ({len(self.images)} images, {len(parts)} parts)"

    def table_lines(self) -> list[str]:
        """The report printed by `--evaluate`: counts, a table by part, one by group, mIoU."""
        lines = [
            f"Evaluated {len(self.images)} image(s) ({self.masks} masks) against {self.gt_dir}; "
            f"{len(self.without_gt)} without ground truth skipped"
            + (f", {len(self.without_mask)} without a {self.masks} mask skipped")
            + (f", {len(self.errors)} with errors" if self.errors else ""),
            "",
            f"{'part':<28} {'IoU':>7} {'Dice':>7} {'images':>7} {'GT px':>11} {'pred px':>11}",
        ]
        for part, t in self.parts.items():
            name = f"{part} {part_name(self.labels, part)}" if self.labels.get(part) else f"{part}"
            lines.append(
                f"{name[:28]:<28} {_fmt(t.iou):>7} {_fmt(t.dice):>7} {t.images:>7} "
                f"{t.gt:>11} {t.pred:>11}"
            )
        lines += ["", f"{'group':<40} {'images':>7} {'mIoU':>7}"]
        for row in self.per_group():
            miou = row["miou"]
            lines.append(
                f"{row['label'][:40]:<40} {row['images']:>7} "
                f"{_fmt(math.nan if miou is None else miou):>7}"
            )
        for pk, reason in self.errors:
            lines.append(f"error: {pk}: {reason}")
        lines.append(self.final_line())
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the app shows it)."""
        return {
            "masks": self.masks,
            "gt_dir": self.gt_dir,
            "miou": _num(self.miou),
            "images": len(self.images),
            "parts": [
                {
                    "id": p,
                    "name": part_name(self.labels, p),
                    "iou": _num(t.iou),
                    "dice": _num(t.dice),
                    "images": t.images,
                }
                for p, t in self.parts.items()
            ],
            "groups": self.per_group(),
            "per_image": {i.pk: _num(i.iou) for i in self.images},
            "without_gt": len(self.without_gt),
            "without_mask": len(self.without_mask),
            "errors": [{"pk": pk, "reason": r} for pk, r in self.errors],
            "files": self.files,
            "line": self.final_line(),
        }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def known_ids(project: Any) -> set[int] | None:
    """IDs a ground-truth mask may hold: the named parts, else the IDs the mask mode can give
    (binary 1, position 1-4), else those of the saved references; None when nothing is known."""
    spec = project.spec
    if spec.mask_mode == "binary":
        return {1}
    if spec.mask_mode == "position":
        return {1, 2, 3, 4}
    if spec.labels:
        return set(spec.labels)
    ids: set[int] = set()
    folder = Path(spec.ref_masks_dir)
    if folder.is_dir():
        for path in folder.glob("*.png"):
            if path.name.startswith("."):
                continue
            try:
                ids |= {int(v) for v in np.unique(read_mask(path))} - {0}
            except UserError:
                continue  # a bad reference is the run's problem, not the evaluation's
    return ids or None


def resolve_gt_dir(project: Any, gt_dir: str | os.PathLike | None) -> Path:
    """The ground-truth folder given, or the project's `ground_truth` setting; UserError if none."""
    if gt_dir is None or not str(gt_dir).strip():
        if project.spec.ground_truth is None:
            raise UserError(
                f"project {project.name!r} has no ground-truth folder: pass --gt DIR or set "
                '"ground_truth" in its spec.json'
            )
        gt_dir = project.spec.ground_truth
    path = Path(os.path.expanduser(str(gt_dir))).absolute()
    if not path.is_dir():
        raise UserError(f"ground-truth folder {path} does not exist: check the path")
    return path


def read_gt(path: Path, size: tuple[int, int], allowed: set[int] | None) -> np.ndarray:
    """A ground-truth mask checked against its image's (width, height) and the project's IDs."""
    gt = read_mask(path, expected_size=size)
    if allowed is not None:
        foreign = sorted({int(v) for v in np.unique(gt)} - {0} - allowed)
        if foreign:
            raise MaskError(
                f"ground truth {path} holds ID(s) {', '.join(map(str, foreign))} that this project "
                f"does not have (known: {', '.join(map(str, sorted(allowed)))}): renumber them"
            )
    return gt


def evaluate(
    project: Any,
    gt_dir: str | os.PathLike | None = None,
    masks: str = "pred",
    groups: list[str] | None = None,
    on_progress: ProgressFn | None = None,
) -> Evaluation:
    """Compare the project's predicted (or reference) masks with the ground truth in `gt_dir`."""
    if masks not in MASK_SOURCES:
        raise UserError(f"--masks is {masks!r}: use one of {', '.join(MASK_SOURCES)}")
    gt_path = resolve_gt_dir(project, gt_dir)
    spec = project.spec
    source_dir = Path(spec.pred_masks_dir if masks == "pred" else spec.ref_masks_dir)
    result = Evaluation(masks=masks, gt_dir=str(gt_path), labels=dict(spec.labels))
    allowed = known_ids(project)
    gt_names, mask_names = mask_files.mask_names(gt_path), mask_files.mask_names(source_dir)
    if masks == "pred":
        # A frame with a reference is never also a prediction: a leftover prediction file of a
        # frame saved as a reference is not scored (as in every count of the app).
        mask_names = mask_names - mask_files.mask_names(spec.ref_masks_dir)
    chosen = select_groups(project, groups)
    total = sum(len(g.frames) for g in chosen)
    done = 0
    for group in chosen:
        result.groups.append((str(group.key), str(group.label)))
        for frame in group.frames:
            done += 1
            if on_progress is not None:
                on_progress(done, total)
            pk, name = str(frame.pk), mask_file_name(frame.pk)
            if name not in gt_names:
                result.without_gt.append(pk)
                continue
            if name not in mask_names:
                result.without_mask.append(pk)
                continue
            try:
                size = image_size(frame.image_path)
                gt = read_gt(gt_path / name, size, allowed)
                pred = read_mask(source_dir / name, expected_size=size)
            except UserError as exc:
                result.errors.append((pk, str(exc)))
                continue
            parts = compare_masks(pred, gt)
            result.images.append(ImageScore(pk, str(group.key), str(group.label), parts))
    return result


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def write_csvs(result: Evaluation, runs_dir: str | os.PathLike) -> list[str]:
    """Write `evaluation-<time>-images.csv` and `-parts.csv` into `runs_dir`; return the paths."""
    runs = Path(runs_dir)
    stamp = _stamp()
    images_path = runs / f"evaluation-{stamp}-images.csv"
    parts_path = runs / f"evaluation-{stamp}-parts.csv"
    part_ids = list(result.parts)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["pk", "group", "masks", "iou", *[f"iou_{p}" for p in part_ids]])
    for image in result.images:
        writer.writerow(
            [
                image.pk,
                image.group_label,
                result.masks,
                _csv_num(image.iou),
                *[_csv_num(image.parts[p].iou) if p in image.parts else "" for p in part_ids],
            ]
        )
    fileio.atomic_write_text(images_path, buf.getvalue())

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "group",
            "part_id",
            "part_name",
            "iou",
            "dice",
            "images",
            "intersection_px",
            "union_px",
            "gt_px",
            "pred_px",
        ]
    )
    scopes = [("all", result.parts)] + [
        (label, result.group_parts(key)) for key, label in result.groups
    ]
    for scope, parts in scopes:
        for part, t in parts.items():
            writer.writerow(
                [
                    scope,
                    part,
                    part_name(result.labels, part),
                    _csv_num(t.iou),
                    _csv_num(t.dice),
                    t.images,
                    t.intersection,
                    t.union,
                    t.gt,
                    t.pred,
                ]
            )
        writer.writerow([scope, "", "mIoU", _csv_num(mean_iou(parts)), "", "", "", "", "", ""])
    fileio.atomic_write_text(parts_path, buf.getvalue())
    result.files = [str(images_path), str(parts_path)]
    return result.files


def _csv_num(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"
