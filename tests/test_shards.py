"""--shard I/N: disjoint, complete, balanced shards that run the ordinary group loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _run_helpers import make_project

from sst_desktop import cli
from sst_desktop.data.masks import write_mask
from sst_desktop.data.project import Project
from sst_desktop.errors import UserError
from sst_desktop.run.runner import RunOptions, run_inference
from sst_desktop.run.shards import (
    WorkUnit,
    options_for,
    parse_shard,
    plan_shards,
    split_shards,
)

# Group a: 1 reference + 6 targets; b: 1 + 2; c: 1 + 1; d: no reference, 2 frames (targets).
GROUPS = {
    "a": [(64, 56)] * 7,
    "b": [(56, 64)] * 3,
    "c": [(64, 64)] * 2,
    "d": [(48, 64)] * 2,
}
REFS = {"a": 1, "b": 1, "c": 1}
ALL_TARGETS = {"a1", "a2", "a3", "a4", "a5", "a6", "b1", "b2", "c1", "d0", "d1"}


def _project(base: Path, checkpoint: Path) -> Project:
    return Project.open(make_project(base, checkpoint, groups=GROUPS, references=REFS))


def _pks(shard: list[WorkUnit]) -> list[str]:
    return [pk for unit in shard for pk in unit.pks]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 12])
def test_shards_are_disjoint_complete_and_balanced(tmp_path, sam2_checkpoint, count):
    shards = plan_shards(_project(tmp_path, sam2_checkpoint), RunOptions(), count)
    assert len(shards) == count
    every = [pk for shard in shards for pk in _pks(shard)]
    assert sorted(every) == sorted(ALL_TARGETS)  # complete, and no target twice
    loads = [len(_pks(s)) for s in shards]
    fair = -(-len(ALL_TARGETS) // count)
    biggest = max((u.weight for s in shards for u in s), default=0)
    assert biggest <= fair  # a group over the fair share was cut into chunks
    assert max(loads) - min(loads) <= biggest


def test_a_group_over_the_fair_share_is_cut_into_chunks(tmp_path, sam2_checkpoint):
    project = _project(tmp_path, sam2_checkpoint)
    # 2 shards: fair share 6, group a (6 targets) stays whole.
    assert all(u.chunks == 1 for s in plan_shards(project, RunOptions(), 2) for u in s)
    # 3 shards: fair share 4, group a becomes two chunks of 3 consecutive targets.
    shards = plan_shards(project, RunOptions(), 3)
    assert [[(u.group_label, u.pks) for u in s] for s in shards] == [
        [("set=a", ("a1", "a2", "a3")), ("set=c", ("c1",))],
        [("set=a", ("a4", "a5", "a6"))],
        [("set=b", ("b1", "b2")), ("set=d", ("d0", "d1"))],
    ]


def test_the_split_ignores_existing_predictions(tmp_path, sam2_checkpoint):
    project = _project(tmp_path, sam2_checkpoint)
    before = plan_shards(project, RunOptions(), 3)
    write_mask(project.pred_mask_path("a2"), __import__("numpy").zeros((56, 64), "uint8"))
    write_mask(project.pred_mask_path("b1"), __import__("numpy").zeros((64, 56), "uint8"))
    assert plan_shards(project, RunOptions(), 3) == before


def test_split_is_largest_first_to_least_loaded():
    units = [
        WorkUnit(k, k, tuple(f"{k}{i}" for i in range(n)), order=o)
        for o, (k, n) in enumerate([("x", 1), ("y", 4), ("z", 3), ("w", 2)])
    ]
    shards = split_shards(units, 2)
    assert [[u.group_key for u in s] for s in shards] == [["x", "y"], ["z", "w"]]


@pytest.mark.parametrize("text", ["2/2", "1", "-1/3", "a/b", "0/0"])
def test_bad_shard_text_is_a_user_error(text):
    with pytest.raises(UserError, match="--shard"):
        parse_shard(text)
    assert parse_shard("1/3") == (1, 3)


def test_shards_write_the_same_masks_as_one_run_and_their_own_summaries(tmp_path, sam2_checkpoint):
    local = _project(tmp_path / "local", sam2_checkpoint)
    local_summary = run_inference(local, RunOptions())
    sharded = _project(tmp_path / "sharded", sam2_checkpoint)
    shards = plan_shards(sharded, RunOptions(), 3)
    written: list[str] = []
    paths = set()
    for index, shard in enumerate(shards):
        summary = run_inference(sharded, options_for(RunOptions(), shard, shard=f"{index}/3"))
        assert summary.ok
        written += summary.written_pks
        saved = json.loads(Path(summary.summary_path).read_text())
        assert saved["options"]["shard"] == f"{index}/3"
        assert sorted(saved["written_pks"]) == sorted(
            pk for pk in _pks(shard) if not pk.startswith("d")
        )
        paths.add(summary.summary_path)
    assert len(paths) == 3
    assert (
        sorted(written) == sorted(local_summary.written_pks) == sorted(ALL_TARGETS - {"d0", "d1"})
    )
    for pk in written:  # chunks rebuild the same reference memory: same pixels
        assert sharded.pred_mask_path(pk).read_bytes() == local.pred_mask_path(pk).read_bytes(), pk
    # Running a shard again resumes: nothing predicted twice.
    again = run_inference(sharded, options_for(RunOptions(), shards[0], shard="0/3"))
    assert again.written == 0 and again.skipped == len(
        [pk for pk in _pks(shards[0]) if not pk.startswith("d")]
    )


def test_an_empty_shard_runs_nothing(tmp_path, sam2_checkpoint):
    project = _project(tmp_path, sam2_checkpoint)
    shards = plan_shards(project, RunOptions(groups=["set=c"]), 3)
    empty = [s for s in shards if not s]
    assert len(empty) == 2
    summary = run_inference(project, options_for(RunOptions(groups=["set=c"]), empty[0]))
    assert summary.written == 0 and summary.groups_without_references == []


def test_cli_dry_run_prints_the_shards_plan(tmp_path, sam2_checkpoint, capsys):
    spec = make_project(tmp_path, sam2_checkpoint, groups=GROUPS, references=REFS)
    shards = plan_shards(Project.open(spec), RunOptions(), 3)
    code = cli.main(["--infer", str(spec), "--dry-run", "--shard", "1/3"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    mine = shards[1]
    assert out.splitlines()[0] == (
        f"Shard 1/3: {len(mine)} unit(s), {len(_pks(mine))} of 11 target(s) (shard loads "
        f"{min(len(_pks(s)) for s in shards)} to {max(len(_pks(s)) for s in shards)})"
    )
    for unit in mine:
        assert f"group {unit.group_label}" in out
    assert "  group set=a, chunk 2 of 2: 3 target(s)" in out
    # The dry run checks this shard's images and its group's reference only.
    assert "Checked 4 image(s) in 1 group(s) and 1 reference mask(s)" in out
    assert not (tmp_path / "proj" / "pred_masks").exists()


def test_cli_refuses_a_shard_out_of_range(tmp_path, sam2_checkpoint, capsys):
    spec = make_project(tmp_path, sam2_checkpoint, groups=GROUPS, references=REFS)
    assert cli.main(["--infer", str(spec), "--shard", "3/3"]) == cli.EXIT_USAGE
    assert "--shard 3/3" in capsys.readouterr().err
    assert cli.main(["--shard", "0/3"]) == cli.EXIT_USAGE
