"""The shared run loop on a real project with the random-weight checkpoint (structure, not quality)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import image_path, make_project, reference_mask
from PIL import Image

from sst_desktop import fileio
from sst_desktop.data.masks import read_mask, write_mask
from sst_desktop.data.project import Project
from sst_desktop.errors import UserError
from sst_desktop.run.progress import format_event
from sst_desktop.run.runner import RunOptions, dry_run, plan_run, run_inference


def _preds(spec: Path) -> dict[str, Path]:
    folder = spec.parent / "pred_masks"
    return {p.stem: p for p in sorted(folder.glob("*.png"))} if folder.is_dir() else {}


def _run(spec: Path, events: list | None = None, cancel=None, **options):
    project = Project.open(spec)
    sink = events.append if events is not None else None
    return run_inference(project, RunOptions(**options), on_event=sink, cancel=cancel)


def _assert_valid_prediction(spec: Path, pk: str, ids: set[int]) -> np.ndarray:
    size = Image.open(image_path(spec, pk)).size
    mask = read_mask(spec.parent / "pred_masks" / f"{pk}.png", expected_size=size)
    assert set(np.unique(mask).tolist()) <= {0, *ids}
    with Image.open(spec.parent / "pred_masks" / f"{pk}.png") as im:
        assert im.mode == "L"
    return mask


def test_run_writes_every_target_and_equals_propagate(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    (spec.parent / "pred_masks").mkdir()
    stale = spec.parent / "pred_masks" / ".a1.png.abc.tmp"  # no writer named: stale when old
    stale.write_bytes(b"half a png")
    past = stale.stat().st_mtime - 2 * fileio.STALE_TEMP_AGE_S
    os.utime(stale, (past, past))
    events: list[dict] = []
    summary = _run(spec, events)

    preds = _preds(spec)
    assert sorted(preds) == ["a1", "a2", "a3", "a4"]  # not the reference a0, nothing for group b
    assert not stale.exists()
    masks = {pk: _assert_valid_prediction(spec, pk, {1, 2}) for pk in preds}
    assert summary.written == 4 and summary.failed == [] and summary.ok
    assert summary.groups_without_references == ["set=b"]
    assert sorted(summary.written_pks) == sorted(preds)
    # The run log names groups as the screens do (their values), not as Column=value.
    log = [format_event(e) for e in events if e["type"] in ("group_start", "group_skipped")]
    assert sorted(log) == [
        "Group a: 1 reference(s), 4 to predict",
        "Group b skipped: no reference masks",
    ]

    saved = json.loads(Path(summary.summary_path).read_text())
    assert Path(summary.summary_path).parent == spec.parent / "runs"
    assert saved["written"] == 4 and saved["groups_without_references"] == ["set=b"]

    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert {"group_start", "model_load", "frame", "progress", "group_skipped"} <= set(kinds)
    assert events[0]["targets"] == 4
    last_progress = [e for e in events if e["type"] == "progress"][-1]
    assert last_progress["done"] == last_progress["total"] == 4
    written = [e["pk"] for e in events if e["type"] == "frame" and e["status"] == "written"]
    assert written == ["a1", "a2", "a3", "a4"]

    # The CLI/GUI path gives exactly what the engine gives when called directly.
    from sst_desktop.data.images import load_image_array
    from sst_desktop.engine.propagation import build_reference_memory, propagate
    from sst_desktop.engine.sam2_model import get_model

    handle = get_model(
        "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=256
    )
    ref_image = load_image_array(image_path(spec, "a0"))
    ref_mask = read_mask(spec.parent / "ref_masks" / "a0.png")
    memory = build_reference_memory(handle, [(ref_image, ref_mask)])
    targets = [(pk, load_image_array(image_path(spec, pk))) for pk in preds]
    direct = {r.key: r.mask for r in propagate(handle, memory, targets, batch_size=1)}
    for pk, mask in masks.items():
        np.testing.assert_array_equal(mask, direct[pk])


def test_resume_skips_existing_and_overwrite_rewrites(tmp_path, sam2_checkpoint):
    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 4}, references={"a": 1}
    )
    first = _run(spec, max_frames=2)
    assert first.written == 2 and sorted(_preds(spec)) == ["a1", "a2"]
    mtimes = {pk: p.stat().st_mtime_ns for pk, p in _preds(spec).items()}

    second = _run(spec)
    assert second.written == 1 and second.skipped == 2
    assert sorted(_preds(spec)) == ["a1", "a2", "a3"]
    assert {pk: _preds(spec)[pk].stat().st_mtime_ns for pk in mtimes} == mtimes

    events: list[dict] = []
    third = _run(spec, events)
    assert third.written == 0 and third.skipped == 3 and third.ok
    assert "model_load" not in {e["type"] for e in events}  # nothing to do: no model needed
    skipped = [e["pk"] for e in events if e["type"] == "frame" and e["status"] == "skipped"]
    assert skipped == ["a1", "a2", "a3"]

    fourth = _run(spec, overwrite=True, max_frames=1)
    assert fourth.written == 1 and fourth.written_pks == ["a1"]
    assert _preds(spec)["a1"].stat().st_mtime_ns != mtimes["a1"]
    assert _preds(spec)["a2"].stat().st_mtime_ns == mtimes["a2"]


def test_a_new_reference_makes_the_groups_predictions_stale_and_the_next_run_redoes_them(
    tmp_path, sam2_checkpoint
):
    import os
    import shutil

    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 4}, references={"a": 1}
    )
    assert _run(spec).written == 3
    newest = max(p.stat().st_mtime_ns for p in _preds(spec).values())
    # a1's prediction, corrected, becomes a reference after the run (its mtime set, not waited for).
    ref = spec.parent / "ref_masks" / "a1.png"
    shutil.copyfile(_preds(spec)["a1"], ref)
    os.utime(ref, ns=(newest + 1, newest + 1))
    (plan,) = plan_run(Project.open(spec), RunOptions())
    assert [f.pk for f in plan.references] == ["a0", "a1"]
    assert [f.pk for f in plan.targets] == ["a2", "a3"] and plan.existing == []

    events: list[dict] = []
    summary = _run(spec, events)
    assert summary.written == 2 and sorted(summary.written_pks) == ["a2", "a3"]
    (start,) = [e for e in events if e["type"] == "group_start"]
    assert start["references"] == 2
    (plan,) = plan_run(Project.open(spec), RunOptions())
    assert plan.targets == [] and plan.existing == ["a2", "a3"]


def test_corrupt_image_in_the_middle_is_reported_and_the_rest_written(tmp_path, sam2_checkpoint):
    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 4}, references={"a": 1}
    )
    image_path(spec, "a2").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    events: list[dict] = []
    summary = _run(spec, events, batch_size=2)
    assert sorted(_preds(spec)) == ["a1", "a3"]
    assert [f["pk"] for f in summary.failed] == ["a2"]
    assert "a2.png" in summary.failed[0]["reason"]
    assert not summary.ok
    failed = [e for e in events if e["type"] == "frame" and e["status"] == "failed"]
    assert [e["pk"] for e in failed] == ["a2"]


def test_bad_references_are_left_out_or_skip_the_group(tmp_path, sam2_checkpoint):
    groups = {"a": [(64, 48)] * 3, "c": [(64, 48)] * 2}
    spec = make_project(tmp_path, sam2_checkpoint, groups=groups, references={"a": 2, "c": 1})
    refs = spec.parent / "ref_masks"
    write_mask(refs / "a1.png", reference_mask((50, 50)))  # wrong size: left out
    write_mask(refs / "c0.png", np.zeros((48, 64), np.uint8))  # empty: c has no usable reference
    events: list[dict] = []
    summary = _run(spec, events)
    assert sorted(_preds(spec)) == ["a2"]
    reasons = {f["pk"]: f["reason"] for f in summary.failed}
    assert sorted(reasons) == ["a1", "c0"]
    assert "50x50" in reasons["a1"] and "empty" in reasons["c0"]
    skipped = [e for e in events if e["type"] == "group_skipped"]
    assert [e["label"] for e in skipped] == ["set=c"]
    ref_events = [e for e in events if e["type"] == "frame" and e.get("reference")]
    assert [(e["pk"], e["status"]) for e in ref_events] == [("a1", "failed"), ("c0", "failed")]
    assert summary.groups_without_references == []


@pytest.mark.parametrize(("mode", "ids"), [("binary", {1}), ("position", {1, 4})])
def test_mask_mode_applies_to_references_before_conditioning(tmp_path, sam2_checkpoint, mode, ids):
    # The reference has IDs 1 (upper left) and 2 (lower right): binary makes them 1, position 1 and 4.
    spec = make_project(tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 2}, mask_mode=mode)
    summary = _run(spec)
    assert summary.written == 1
    mask = _assert_valid_prediction(spec, "a1", ids)
    # Random weights still paint every object somewhere, so the transformed IDs all show up.
    assert set(np.unique(mask).tolist()) - {0} == ids


def test_cancel_stops_between_frames_and_the_next_run_finishes(tmp_path, sam2_checkpoint):
    spec = make_project(
        tmp_path,
        sam2_checkpoint,
        groups={"a": [(64, 48)] * 5, "d": [(64, 48)] * 2},
        references={"a": 1, "d": 1},
    )
    cancel = threading.Event()
    events: list[dict] = []

    def sink(event):
        events.append(event)
        if event["type"] == "frame" and event["status"] == "written":
            cancel.set()

    summary = run_inference(Project.open(spec), RunOptions(), on_event=sink, cancel=cancel)
    assert summary.cancelled and summary.written == 1 and summary.ok
    assert sorted(_preds(spec)) == ["a1"]
    assert json.loads(Path(summary.summary_path).read_text())["cancelled"] is True
    rest = _run(spec)
    assert rest.written == 4 and rest.skipped == 1
    assert sorted(_preds(spec)) == ["a1", "a2", "a3", "a4", "d1"]


def test_empty_predictions_are_flagged(tmp_path, sam2_checkpoint):
    """Biasing the object-score head negative makes SAM2 answer 'no object' everywhere."""
    import torch

    state = torch.load(sam2_checkpoint, map_location="cpu", weights_only=True)
    state["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(-30.0)
    biased = tmp_path / "biased.pt"
    torch.save(state, biased)
    spec = make_project(tmp_path, biased, groups={"a": [(64, 48)] * 3})
    summary = _run(spec)
    assert summary.written == 2
    assert summary.flagged == [
        {"pk": "a1", "reasons": ["empty"]},
        {"pk": "a2", "reasons": ["empty"]},
    ]
    for pk in ("a1", "a2"):
        assert not _assert_valid_prediction(spec, pk, {1, 2}).any()
    from sst_desktop.data.review import FLAGS_INDEX_NAME, clear_flags_cache, latest_flags

    # The run leaves an up-to-date index, so a fresh process reads it instead of every summary.
    index = json.loads((spec.parent / "runs" / FLAGS_INDEX_NAME).read_text(encoding="utf-8"))
    assert index["flags"] == {"a1": ["empty"], "a2": ["empty"]}
    assert list(index["summaries"]) == [Path(summary.summary_path).name]
    clear_flags_cache()
    assert latest_flags(spec.parent) == {"a1": ["empty"], "a2": ["empty"]}


def test_group_selection_by_key_or_label(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    project = Project.open(spec)
    key_b = project.groups()[1].key
    assert [p.group.label for p in plan_run(project, RunOptions(groups=["set=b"]))] == ["set=b"]
    assert [p.group.label for p in plan_run(project, RunOptions(groups=[key_b, "set=a"]))] == [
        "set=a",
        "set=b",
    ]
    with pytest.raises(UserError, match="unknown group 'nope'"):
        plan_run(project, RunOptions(groups=["nope"]))
    summary = _run(spec, groups=["set=b"])  # only a group without references: nothing to do
    assert summary.groups_without_references == ["set=b"] and summary.written == 0
    assert _preds(spec) == {}


def test_dry_run_reports_problems_and_writes_nothing(tmp_path, sam2_checkpoint):
    groups = {"a": [(64, 48)] * 4, "b": [(64, 48)] * 2, "c": [(64, 48)] * 2}
    spec = make_project(
        tmp_path, sam2_checkpoint, groups=groups, references={"a": 3, "c": 1}, mask_mode="position"
    )
    project = Project.open(spec)
    clean = dry_run(project)
    assert clean.ok, clean.lines
    assert clean.failing_pks == [] and any("set=b" in w for w in clean.warnings)

    refs = spec.parent / "ref_masks"
    write_mask(refs / "a1.png", reference_mask((40, 40)))  # wrong size
    write_mask(refs / "a2.png", np.zeros((48, 64), np.uint8))  # empty
    crowded = np.zeros((48, 64), np.uint8)
    for i in range(5):  # five objects: position mode cannot label them
        crowded[2 + 9 * i : 6 + 9 * i, 2:6] = i + 1
    write_mask(refs / "c0.png", crowded)
    write_mask(refs / "zz9.png", reference_mask((64, 48)))  # no such frame
    image_path(spec, "b1").write_bytes(b"not an image")
    image_path(spec, "a3").unlink()
    report = dry_run(Project.open(spec))
    assert not report.ok
    assert sorted(report.failing_pks) == ["a1", "a2", "a3", "b1", "c0", "zz9"]
    text = "\n".join(report.lines)
    assert "40x40" in text and "empty" in text and "zz9" in text
    assert not (spec.parent / "pred_masks").exists() and not (spec.parent / "runs").exists()
    assert dry_run(Project.open(spec), decode=True).failing_pks == report.failing_pks


def test_dry_run_of_a_project_without_images_is_a_problem(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint, groups={"a": []}, references={})
    report = dry_run(Project.open(spec))
    assert not report.ok
    assert any("no images" in line for line in report.lines)


def test_engine_failure_fails_that_groups_frames_only(tmp_path, sam2_checkpoint, monkeypatch):
    """A double of propagate() that dies after one result: the next group still runs for real."""
    import sst_desktop.engine.propagation as propagation

    real = propagation.propagate
    calls = []

    def dying(handle, memory, targets, batch_size=1, **pipeline):
        calls.append(1)
        results = real(handle, memory, targets, batch_size=batch_size, **pipeline)
        if len(calls) > 1:
            yield from results
            return
        yield next(results)
        results.close()
        raise RuntimeError("device lost")

    monkeypatch.setattr(propagation, "propagate", dying)
    groups = {"a": [(64, 48)] * 4, "d": [(64, 48)] * 2}
    spec = make_project(tmp_path, sam2_checkpoint, groups=groups, references={"a": 1, "d": 1})
    summary = _run(spec)
    assert sorted(_preds(spec)) == ["a1", "d1"]
    assert [f["pk"] for f in summary.failed] == ["a2", "a3"]
    assert all("engine error: RuntimeError: device lost" in f["reason"] for f in summary.failed)


def test_a_reference_failing_the_mask_mode_is_named_by_file(tmp_path, sam2_checkpoint):
    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 2}, mask_mode="position"
    )
    crowded = np.zeros((48, 64), np.uint8)
    crowded[4:8, 4:8], crowded[4:8, 14:18], crowded[40:44, 4:8] = (
        1,
        2,
        3,
    )  # 1 and 2 share a quadrant
    write_mask(spec.parent / "ref_masks" / "a0.png", crowded)
    summary = _run(spec)  # no usable reference left: the group is skipped before any model load
    assert [f["pk"] for f in summary.failed] == ["a0"]
    reason = summary.failed[0]["reason"]
    assert str(spec.parent / "ref_masks" / "a0.png") in reason and "quadrant" in reason
    problems = dry_run(Project.open(spec)).problems
    assert problems and "a0.png" in problems[0][1] and "quadrant" in problems[0][1]
    assert not _preds(spec)


def test_a_summary_that_cannot_be_saved_is_reported_not_raised(
    tmp_path, sam2_checkpoint, monkeypatch
):
    # Disk full (or a read-only runs/): the run's outcome still comes back, saying what was lost.
    import errno

    from sst_desktop import fileio

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fileio, "atomic_write_json", full)
    spec = make_project(tmp_path, sam2_checkpoint, groups={"b": [(64, 48)] * 2}, references={})
    events: list[dict] = []
    summary = _run(spec, events)
    assert summary.summary_path is None and not summary.ok
    assert "run summary" in summary.error and "No space left" in summary.error
    assert events[-1]["type"] == "run_end" and events[-1]["summary"]["error"] == summary.error
