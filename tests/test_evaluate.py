"""Tests for --evaluate: numbers equal an independent computation on hand-made masks."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from _run_helpers import make_project, run_cli

from sst_desktop.data.masks import write_mask
from sst_desktop.data.project import Project
from sst_desktop.run import evaluate as ev

SIZES = {"a1": (64, 64), "a2": (56, 80), "a3": (80, 48), "a4": (64, 56), "b0": (64, 64)}


def blobs(size, boxes):
    """An ID mask with rectangles {id: (x0, y0, x1, y1)}."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    for object_id, (x0, y0, x1, y1) in boxes.items():
        mask[y0:y1, x0:x1] = object_id
    return mask


@pytest.fixture()
def project(tmp_path):
    spec_path = make_project(tmp_path, tmp_path / "none.pt")
    data = json.loads(spec_path.read_text())
    data["labels"] = {"1": "left wing", "2": "body"}
    spec_path.write_text(json.dumps(data))
    root = spec_path.parent
    gt, pred = {}, {}
    # a1: both parts found, each a bit off.
    gt["a1"] = blobs(SIZES["a1"], {1: (5, 5, 30, 40), 2: (35, 10, 60, 50)})
    pred["a1"] = blobs(SIZES["a1"], {1: (8, 5, 30, 44), 2: (35, 12, 58, 50)})
    # a2: part 2 missing from the prediction.
    gt["a2"] = blobs(SIZES["a2"], {1: (4, 4, 30, 30), 2: (10, 40, 50, 75)})
    pred["a2"] = blobs(SIZES["a2"], {1: (4, 6, 30, 32)})
    # a3: IDs swapped.
    gt["a3"] = blobs(SIZES["a3"], {1: (2, 2, 30, 40), 2: (40, 5, 78, 45)})
    pred["a3"] = blobs(SIZES["a3"], {2: (2, 2, 30, 40), 1: (40, 5, 78, 45)})
    # a4: a prediction but no ground truth. b0: ground truth with a foreign ID.
    pred["a4"] = blobs(SIZES["a4"], {1: (1, 1, 10, 10)})
    gt["b0"] = blobs(SIZES["b0"], {1: (1, 1, 10, 10), 7: (20, 20, 30, 30)})
    pred["b0"] = blobs(SIZES["b0"], {1: (1, 1, 10, 10)})
    # b1: ground truth of the wrong size.
    gt["b1"] = blobs((30, 30), {1: (1, 1, 10, 10)})
    pred["b1"] = blobs((48, 64), {1: (1, 1, 10, 10)})
    for pk, mask in gt.items():
        write_mask(tmp_path / "gt" / f"{pk}.png", mask)
    for pk, mask in pred.items():
        write_mask(root / "pred_masks" / f"{pk}.png", mask)
    return spec_path, gt, pred


def independent(gt, pred, pks):
    """IoU/Dice per part and mIoU, computed the plain way."""
    inter, union, g_px, p_px = {}, {}, {}, {}
    per_image = {}
    for pk in pks:
        ious = []
        for part in (1, 2):
            g, p = gt[pk] == part, pred[pk] == part
            i, u = int(np.logical_and(g, p).sum()), int(np.logical_or(g, p).sum())
            inter[part] = inter.get(part, 0) + i
            union[part] = union.get(part, 0) + u
            g_px[part] = g_px.get(part, 0) + int(g.sum())
            p_px[part] = p_px.get(part, 0) + int(p.sum())
            if u:
                ious.append(i / u)
        per_image[pk] = sum(ious) / len(ious)
    iou = {p: inter[p] / union[p] for p in inter}
    dice = {p: 2 * inter[p] / (g_px[p] + p_px[p]) for p in inter}
    return iou, dice, sum(iou.values()) / len(iou), per_image


def test_numbers_equal_an_independent_computation(project):
    spec_path, gt, pred = project
    result = ev.evaluate(Project.open(spec_path), gt_dir=spec_path.parent.parent / "gt")
    iou, dice, miou, per_image = independent(gt, pred, ["a1", "a2", "a3"])
    assert sorted(i.pk for i in result.images) == ["a1", "a2", "a3"]
    parts = result.parts
    assert set(parts) == {1, 2}
    for part in (1, 2):
        assert parts[part].iou == pytest.approx(iou[part], abs=1e-12)
        assert parts[part].dice == pytest.approx(dice[part], abs=1e-12)
    assert result.miou == pytest.approx(miou, abs=1e-12)
    for image in result.images:
        assert image.iou == pytest.approx(per_image[image.pk], abs=1e-12)
    # The swapped image scores 0; the one missing part 2 scores only its part 1.
    scores = {i.pk: i.iou for i in result.images}
    assert scores["a3"] == 0.0
    # a0 is a reference (no prediction); a4 and the frames of b without files have no GT.
    assert sorted(result.without_gt) == ["a0", "a4"]
    errors = dict(result.errors)
    assert set(errors) == {"b0", "b1"}
    assert "ID(s) 7" in errors["b0"] and "30x30" in errors["b1"]
    assert result.final_line() == f"mIoU: {miou:.4f} (3 images, 2 parts)"


def test_mean_iou_counts_parts_present_in_gt_or_prediction_only():
    gt = np.array([[1, 1, 0, 0]], np.uint8)
    pred = np.array([[1, 0, 0, 3]], np.uint8)
    parts = ev.compare_masks(pred, gt)
    assert set(parts) == {1, 3}
    assert parts[1].iou == 0.5 and parts[3].iou == 0.0
    assert ev.mean_iou(parts) == 0.25
    assert math.isnan(ev.mean_iou({}))


def test_cli_prints_tables_and_writes_csvs(project):
    spec_path, gt, pred = project
    proc = run_cli("--evaluate", str(spec_path), "--gt", str(spec_path.parent.parent / "gt"))
    assert proc.returncode == 1, proc.stderr  # two ground-truth files are errors
    lines = proc.stdout.strip().splitlines()
    _, _, miou, per_image = independent(gt, pred, ["a1", "a2", "a3"])
    assert lines[-1] == f"mIoU: {miou:.4f} (3 images, 2 parts)"
    assert any(line.startswith("1 left wing") for line in lines)
    assert any(line.startswith("set=a") for line in lines)
    runs = spec_path.parent / "runs"
    images_csv = next(runs.glob("evaluation-*-images.csv"))
    with open(images_csv, newline="") as f:
        rows = {r["pk"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"a1", "a2", "a3"}
    for pk, value in per_image.items():
        assert float(rows[pk]["iou"]) == pytest.approx(value, abs=1e-6)
    parts_csv = next(runs.glob("evaluation-*-parts.csv"))
    with open(parts_csv, newline="") as f:
        overall = [r for r in csv.DictReader(f) if r["group"] == "all"]
    assert [r["part_name"] for r in overall] == ["left wing", "body", "mIoU"]
    assert float(overall[-1]["iou"]) == pytest.approx(miou, abs=1e-6)
    # Summaries of runs are *.json: the CSVs never count as run summaries.
    assert not list(runs.glob("*.json"))


def test_reference_masks_can_be_evaluated_and_missing_gt_dir_is_one_line(project, tmp_path):
    spec_path, gt, pred = project
    gt_dir = spec_path.parent.parent / "gt"
    write_mask(gt_dir / "a0.png", np.zeros((56, 72), np.uint8))
    result = ev.evaluate(Project.open(spec_path), gt_dir=gt_dir, masks="ref")
    assert [i.pk for i in result.images] == ["a0"]
    proc = run_cli("--evaluate", str(spec_path), "--gt", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    proc = run_cli("--evaluate", str(spec_path))
    assert proc.returncode == 2 and "--gt DIR" in proc.stderr


def test_a_frame_saved_as_reference_no_longer_scores_its_old_prediction(project):
    spec_path, gt, pred = project
    # a1 became a reference (its prediction file stays behind): it is not a prediction any more.
    write_mask(spec_path.parent / "ref_masks" / "a1.png", gt["a1"])
    result = ev.evaluate(Project.open(spec_path), gt_dir=spec_path.parent.parent / "gt")
    _, _, miou, _ = independent(gt, pred, ["a2", "a3"])
    assert sorted(i.pk for i in result.images) == ["a2", "a3"]
    assert "a1" in result.without_mask
    assert result.miou == pytest.approx(miou, abs=1e-12)
