"""Tests for the label-efficiency sweep: reproducible, nothing written, sampled like references."""

from __future__ import annotations

import math

from _run_helpers import make_project, reference_mask, run_cli

from sst_desktop.data.masks import write_mask
from sst_desktop.data.project import Project, sample_references
from sst_desktop.run import sweep as sweep_mod

GROUPS = {"a": [(64, 64), (56, 64), (64, 48), (48, 64)], "b": [(64, 64), (48, 48)]}


def _project(tmp_path, checkpoint):
    spec_path = make_project(tmp_path, checkpoint, groups=GROUPS, references={})
    gt = tmp_path / "gt"
    for group, sizes in GROUPS.items():
        for index, size in enumerate(sizes):
            write_mask(gt / f"{group}{index}.png", reference_mask(size))
    return spec_path, gt


def test_sweep_is_reproducible_and_writes_nothing(tmp_path, sam2_checkpoint, monkeypatch):
    spec_path, gt = _project(tmp_path, sam2_checkpoint)
    project = Project.open(spec_path)
    drawn = []
    real = sweep_mod.sample_references

    def spy(frames, k, seed):
        picked = real(frames, k, seed)
        drawn.append(([f.pk for f in frames], k, seed, [f.pk for f in picked]))
        return picked

    monkeypatch.setattr(sweep_mod, "sample_references", spy)
    progress = []
    first = sweep_mod.label_efficiency_sweep(
        project, ks=[2, 1], seeds=2, gt_dir=gt, on_progress=lambda d, t: progress.append((d, t))
    )
    second = sweep_mod.label_efficiency_sweep(project, ks=[1, 2], seeds=2, gt_dir=gt)
    assert first.to_dict() == second.to_dict()
    assert first.ks == [1, 2] and first.seeds == [0, 1]
    # Group a: 4 frames with ground truth, so 3 + 2 targets per seed; group b: 1 + none (k=2).
    assert progress[-1] == (2 * (3 + 2 + 1), 2 * (3 + 2 + 1))
    for k in (1, 2):
        values = first.overall[k]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert all(len(v) == 2 for v in first.per_group[first.groups[0][0]].values())
    b_key = first.groups[1][0]
    assert first.per_group[b_key][2] == [None, None]
    assert any("k = 2 leaves no frame" in n for n in first.skipped)
    # References are drawn like reference sampling: Random(seed).sample over the GT frames.
    for pks, k, seed, picked in drawn:
        frames = [project.frame(pk) for pk in pks]
        assert picked == [f.pk for f in sample_references(frames, k, seed)]
    assert {(k, seed) for _, k, seed, _ in drawn} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert not list((spec_path.parent / "pred_masks").glob("*.png"))
    mean, std, n = first.stats(first.overall[1])
    assert n == 2 and not math.isnan(mean) and std >= 0


def test_sweep_cli_reports_mean_and_std_per_k(tmp_path, sam2_checkpoint):
    spec_path, gt = _project(tmp_path, sam2_checkpoint)
    proc = run_cli("--evaluate", str(spec_path), "--gt", str(gt), "--sweep", "1", "--seeds", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.strip().startswith("1  "))
    assert "±" in row and "(1 seed)" in row
    assert sum("group set=" in line for line in lines) == 2
    assert not list((spec_path.parent / "pred_masks").glob("*.png"))
