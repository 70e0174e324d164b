"""Runs sharing a project: frame claims and temp-file cleanup between real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from _run_helpers import REPO, cli_env, make_project, run_cli
from PIL import Image

from sst_desktop import fileio
from sst_desktop.run.locks import FrameClaims, active_claims, claims_dir, clean_stale_files


def _start(code: str) -> subprocess.Popen:
    """A Python child that talks line by line on stdin/stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expect(proc: subprocess.Popen, word: str) -> str:
    """Read the child's next line and check it starts with `word` (the child is then waiting)."""
    line = proc.stdout.readline()
    assert line.startswith(word), (line, proc.stderr.read() if proc.poll() is not None else "")
    return line


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


HOLDER = """
    import sys
    from sst_desktop.run.locks import FrameClaims
    claims = FrameClaims(sys.argv[1] if len(sys.argv) > 1 else {root!r}, label="holder")
    claims.open()
    print("held", claims.claim({pks!r}).granted, flush=True)
    sys.stdin.readline()
    claims.close()
    print("closed", flush=True)
"""


def test_a_frame_held_by_a_live_process_is_refused_and_freed_when_it_is_killed(tmp_path):
    holder = _start(HOLDER.format(root=str(tmp_path), pks=["a1", "a2"]))
    try:
        _expect(holder, "held")
        with FrameClaims(tmp_path, label="second") as mine:
            result = mine.claim(["a2", "a3"])
            assert result.granted == ["a3"]
            assert list(result.busy) == ["a2"]
            assert f"pid {holder.pid}" in result.busy["a2"] and "holder" in result.busy["a2"]
            live = {c["pid"]: c["pks"] for c in active_claims(tmp_path)}
            assert live == {holder.pid: ["a1", "a2"], os.getpid(): ["a3"]}

            os.kill(holder.pid, signal.SIGKILL)  # dies holding its claim
            holder.wait(timeout=30)
            assert mine.claim(["a1", "a2"]).granted == ["a1", "a2"]
            assert mine.held == ["a3", "a1", "a2"]
            mine.release(["a3"])
            assert {c["pid"]: c["pks"] for c in active_claims(tmp_path)} == {
                os.getpid(): ["a1", "a2"]
            }
        # Nothing is left behind: the dead run's files went at the next look, ours at close.
        assert sorted(p.name for p in claims_dir(tmp_path).iterdir()) == ["claims.lock"]
    finally:
        _stop(holder)


def test_a_holder_that_closes_gives_its_frames_back(tmp_path):
    holder = _start(HOLDER.format(root=str(tmp_path), pks=["x"]))
    try:
        _expect(holder, "held")
        with FrameClaims(tmp_path) as mine:
            assert mine.claim(["x"]).granted == []
            holder.stdin.write("\n")
            holder.stdin.flush()
            _expect(holder, "closed")
            assert mine.claim(["x"]).granted == ["x"]
    finally:
        _stop(holder)


WRITER = """
    import sys
    from sst_desktop import fileio
    def write(f):
        f.write(b"first half ")
        f.flush()
        print("writing", flush=True)
        sys.stdin.readline()
        f.write(b"second half")
    fileio.atomic_write(sys.argv[1], write)
    print("done", flush=True)
"""


def _writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(target)],
        cwd=REPO,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _expect(proc, "writing")
    return proc


def test_cleaning_keeps_live_writers_temp_files_and_removes_dead_ones_everywhere(tmp_path):
    root = tmp_path / "proj"
    live = _writer(root / "pred_masks" / "a1.png")
    dead = [_writer(root / sub / "x.png") for sub in ("pred_masks", "ref_masks", "runs")]
    try:
        for proc in dead:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        temps = sorted(root.rglob(".*.tmp"))
        assert len(temps) == 4
        assert clean_stale_files(root) == 3
        left = sorted(root.rglob(".*.tmp"))
        assert len(left) == 1 and f".p{live.pid}-" in left[0].name

        # The live write still completes: its temp file was not pulled away from under it.
        live.stdin.write("\n")
        live.stdin.flush()
        _expect(live, "done")
        assert (root / "pred_masks" / "a1.png").read_bytes() == b"first half second half"
        assert list(root.rglob(".*.tmp")) == []
    finally:
        for proc in (live, *dead):
            _stop(proc)


def test_unknown_writers_temp_files_go_only_when_old(tmp_path):
    fresh = tmp_path / ".a.png.abc123.tmp"  # another machine's or an older version's name
    old = tmp_path / ".b.png.def456.tmp"
    reused = tmp_path / f".c.png.p{os.getpid()}-h{fileio.host_tag()}.zz.tmp"  # ours, alive
    for path in (fresh, old, reused):
        path.write_bytes(b"x")
    past = os.stat(old).st_mtime - fileio.STALE_TEMP_AGE_S - 10
    os.utime(old, (past, past))
    assert fileio.remove_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, reused.name])


PAUSED_RUN = """
    import json, sys
    from sst_desktop.data.project import Project
    from sst_desktop.run.runner import RunOptions, run_inference
    paused = []
    def on_event(event):
        if event["type"] == "frame" and event["status"] == "written" and not paused:
            paused.append(1)
            print("paused", flush=True)  # holding the rest of its group, mid-run
            sys.stdin.readline()
    options = RunOptions(groups=["set=a"], overwrite=True)
    summary = run_inference(Project.open(sys.argv[1]), options, on_event=on_event, label="first")
    print("summary", json.dumps(summary.to_dict()), flush=True)
"""


def test_two_runs_of_one_project_share_it_without_losing_a_frame(tmp_path, sam2_checkpoint):
    groups = {"a": [(64, 48), (48, 64), (56, 56), (64, 64), (48, 48)], "b": [(64, 48), (56, 56)]}
    spec = make_project(tmp_path, sam2_checkpoint, groups=groups, references={"a": 1, "b": 1})
    first = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PAUSED_RUN), str(spec)],
        cwd=REPO,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _expect(first, "paused")
        # A second run of the whole project while the first holds group a.
        second = run_cli("--infer", str(spec), "--overwrite")
        assert second.returncode == 0, second.stderr
        saved = sorted((spec.parent / "runs").glob("*.json"))
        assert len(saved) == 1
        summary = json.loads(saved[0].read_text())
        assert summary["written_pks"] == ["b1"] and summary["failed"] == []
        busy = {item["pk"] for item in summary["busy"]}
        assert busy == {"a1", "a2", "a3", "a4"}  # group a stays held until the first run ends it
        assert all(f"pid {first.pid}" in item["by"] for item in summary["busy"])
        assert "left to another run: 4" in second.stdout

        first.stdin.write("\n")
        first.stdin.flush()
        line = _expect(first, "summary")
        done = json.loads(line.split(" ", 1)[1])
        assert done["failed"] == [] and done["busy"] == []
        assert done["written_pks"] == ["a1", "a2", "a3", "a4"]
        first.wait(timeout=60)
    finally:
        _stop(first)
    for pk in ("a1", "a2", "a3", "a4", "b1"):
        with Image.open(spec.parent / "pred_masks" / f"{pk}.png") as im:
            assert im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 1, 2}
    assert active_claims(spec.parent) == []
