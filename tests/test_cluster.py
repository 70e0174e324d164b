"""--scheduler on a real Dask scheduler and two worker processes on loopback: a worker SIGKILLed,
a run cancelled mid-task, one model load per worker with --timings; the task resource rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from _local_cluster import START_TIMEOUT_S, LocalCluster
from _run_helpers import REPO, cli_env, make_project

from sst_desktop.data.project import Project
from sst_desktop.run.cluster import _Merge, task_resources
from sst_desktop.run.runner import RunOptions, RunSummary, run_inference
from sst_desktop.run.shards import WorkUnit, work_units

distributed = pytest.importorskip("distributed")

# 4 groups with a reference and 4 targets each: 16 targets, several tasks per worker.
GROUPS = {g: [(64, 56), (56, 64), (64, 64), (72, 56), (56, 72)] for g in "pqrs"}
REFS = dict.fromkeys("pqrs", 1)
TARGETS = sorted(f"{g}{i}" for g in "pqrs" for i in range(1, 5))


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-thread workers bound to 127.0.0.1; all stopped by PID."""
    with (
        LocalCluster(2, tmp_path / "cluster") as local,
        distributed.Client(local.address, timeout="60s") as client,
    ):
        yield local.address, local.workers, client


def _local_run(base: Path, checkpoint: Path, groups: dict, refs: dict) -> Project:
    """The same project predicted in this process, on one torch thread as the workers."""
    import torch

    local = Project.open(make_project(base, checkpoint, groups, refs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): the same float sums
    try:
        run_inference(local, RunOptions())
    finally:
        torch.set_num_threads(threads)
    return local


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, sam2_checkpoint, cluster):
    from sst_desktop.run.cluster import run_on_cluster

    address, workers, client = cluster
    local = _local_run(tmp_path / "local", sam2_checkpoint, GROUPS, REFS)
    assert sorted(p.stem for p in local.spec.pred_masks_dir.glob("*.png")) == TARGETS

    project = Project.open(make_project(tmp_path / "dist", sam2_checkpoint, GROUPS, REFS))
    preds = Path(project.spec.root) / "pred_masks"
    events: list[dict] = []
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = run_on_cluster(project, address, on_event=events.append)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    victim = workers[0]
    pids = client.run(os.getpid)  # {worker address: pid}
    victim_address = next(addr for addr, pid in pids.items() if pid == victim.pid)
    thread.start()
    # Kill the worker once it has written a mask of the task it is in the middle of.
    kept: dict[str, int] = {}
    mid_task: list[str] = []  # masks the victim wrote in its current task before the kill
    while thread.is_alive():
        mine = [e for e in list(events) if e.get("worker") == victim_address]
        mine = [e for e in mine if e["type"] in ("group_start", "group_end", "frame")]
        if mine and mine[-1]["type"] == "frame" and mine[-1]["status"] == "written":
            since = max(i for i, e in enumerate(mine) if e["type"] == "group_start")
            mid_task = [e["pk"] for e in mine[since:] if e["type"] == "frame"]
            os.kill(victim.pid, signal.SIGKILL)
            kept = {p.stem: p.stat().st_ino for p in preds.glob("*.png")}
            break
        time.sleep(0.02)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert kept, "the run ended before the worker could be killed mid-task"
    assert mid_task and set(mid_task) <= set(kept), mid_task
    assert victim.wait(timeout=30) == -signal.SIGKILL

    summary = outcome["summary"]
    assert summary.failed == [] and summary.ok
    assert sorted(p.stem for p in preds.glob("*.png")) == TARGETS
    for pk in TARGETS:  # every mask complete and equal to the local run's
        assert (preds / f"{pk}.png").read_bytes() == local.pred_mask_path(pk).read_bytes(), pk
    for pk, inode in kept.items():  # finished before the kill: kept, not predicted again
        assert (preds / f"{pk}.png").stat().st_ino == inode, pk
    # Masks the killed worker wrote (its retried task skipped them) count as written by this
    # run, not as skipped.
    assert (summary.written, summary.skipped) == (len(TARGETS), 0)
    assert sorted(summary.written_pks) == TARGETS
    saved = json.loads(Path(summary.summary_path).read_text())
    assert saved["failed"] == [] and saved["spec_path"] == str(project.spec_path)
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == len(TARGETS)
    assert events[-1]["type"] == "run_end"


# 2 groups with a reference and 12 targets each: on 2 workers, 4 tasks of 6 targets.
BIG = {g: [(64, 56), (56, 64), (64, 64), (72, 56)] * 3 + [(56, 72)] for g in "pq"}
BIG_REFS = dict.fromkeys("pq", 1)


def test_cancel_on_the_client_stops_tasks_running_on_workers(tmp_path, sam2_checkpoint, cluster):
    from sst_desktop.run.cluster import run_on_cluster

    address, workers, client = cluster
    local = _local_run(tmp_path / "local", sam2_checkpoint, BIG, BIG_REFS)
    project = Project.open(make_project(tmp_path / "dist", sam2_checkpoint, BIG, BIG_REFS))
    preds = Path(project.spec.root) / "pred_masks"
    cancel = threading.Event()
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["type"] == "frame" and event["status"] == "written":
            cancel.set()  # what Ctrl-C does: once a worker has written its first mask

    summary = run_on_cluster(project, address, on_event=on_event, cancel=cancel)
    deadline = time.monotonic() + START_TIMEOUT_S
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(client.processing().values()), "tasks still run after the run returned"

    assert summary.cancelled and events[-1]["type"] == "run_end"
    assert events[-1]["summary"]["cancelled"]
    written = sorted(p.name for p in preds.iterdir())
    assert all(name.endswith(".png") for name in written), written  # no staged file left
    present = [name[: -len(".png")] for name in written]
    assert present and sorted(summary.written_pks) == present and summary.written == len(present)
    for pk in present:  # complete PNGs, equal to the local run's
        assert (preds / f"{pk}.png").read_bytes() == local.pred_mask_path(pk).read_bytes(), pk
    # The task running at the cancel stopped inside its unit: not every task ran to its end.
    units = work_units(project, RunOptions(), max_targets=6)
    assert [u.weight for u in units] == [6, 6, 6, 6]
    done = [sum(pk in present for pk in u.pks) for u in units]
    assert any(0 < n < 6 for n in done), done
    assert sum(done) < 24


def test_ctrl_c_on_the_cli_stops_the_cluster_run(tmp_path, sam2_checkpoint, cluster):
    address, _workers, client = cluster
    spec = make_project(tmp_path / "dist", sam2_checkpoint, BIG, BIG_REFS)
    preds = spec.parent / "pred_masks"
    env = cli_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_desktop", "--infer", str(spec), "--scheduler", address],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while proc.poll() is None and not (preds.is_dir() and any(preds.glob("*.png"))):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # one Ctrl-C: stop after the batch in flight
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 130, err
    deadline = time.monotonic() + START_TIMEOUT_S
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    present = sorted(p.stem for p in preds.glob("*.png"))
    assert sorted(p.name for p in preds.iterdir()) == [f"{pk}.png" for pk in present]
    saved = json.loads(max((spec.parent / "runs").glob("*.json")).read_text())
    assert saved["cancelled"] and sorted(saved["written_pks"]) == present
    units = work_units(Project.open(spec), RunOptions(), max_targets=6)
    done = [sum(pk in present for pk in u.pks) for u in units]
    assert any(0 < n < 6 for n in done), done  # a task stopped inside its unit


def test_tasks_share_one_model_per_worker_and_timings_print(tmp_path, sam2_checkpoint, cluster):
    address, _workers, client = cluster
    spec = make_project(tmp_path / "dist", sam2_checkpoint, GROUPS, REFS)
    env = cli_env()
    env["OMP_NUM_THREADS"] = "1"
    command = ["--infer", str(spec), "--scheduler", address, "--timings", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "sst_desktop", *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    project = Project.open(spec)
    assert sorted(p.stem for p in project.spec.pred_masks_dir.glob("*.png")) == TARGETS
    saved = json.loads(max((project.spec.root / "runs").glob("*.json")).read_text())
    assert saved["written"] == len(TARGETS) and saved["skipped"] == 0
    tasks = saved["timings"]["tasks"]
    assert len(tasks) == 4 and sum(t["targets"] for t in tasks) == len(TARGETS)
    by_worker: dict[str, int] = {}
    for task in tasks:
        by_worker[task["worker"]] = by_worker.get(task["worker"], 0) + task["model_loads"]
    # More tasks than workers: some worker ran several, and loaded the model for the first only.
    assert len(tasks) > len(by_worker) and set(by_worker.values()) == {1}
    from sst_desktop.engine.sam2_model import loaded_models

    held = client.run(lambda: len(loaded_models()))
    assert sorted(held[w] for w in by_worker) == [1] * len(by_worker)
    out = proc.stdout.splitlines()
    assert out[0].startswith(f"Timings: {len(TARGETS)} image(s)")
    assert f"summed over 4 task(s) on {len(by_worker)} worker(s)" in out[1]
    assert out[-1].startswith(f"  model loaded {len(by_worker)} time(s) on {len(by_worker)}")


@pytest.mark.parametrize(
    ("device", "offers", "asks"),
    [
        ("cuda", [{}, {}], {"GPU": 1}),
        ("cuda:1", [{"GPU": 1}], {"GPU": 1}),
        ("mps", [{}], {"GPU": 1}),
        ("cpu", [{"GPU": 1}, {"GPU": 1}], None),
        ("auto", [{"GPU": 1}, {"GPU": 2}], {"GPU": 1}),
        ("auto", [{"GPU": 1}, {}], None),  # mixed: CPU workers must be able to run tasks
        ("auto", [{}, {}], None),
        ("auto", [], None),
    ],
)
def test_the_resource_a_task_asks_for(device, offers, asks):
    workers = [{"resources": offer} for offer in offers]
    assert task_resources(device, workers) == asks


def test_without_dask_distributed_the_run_says_what_to_install(
    tmp_path, sam2_checkpoint, monkeypatch
):
    from sst_desktop.errors import UserError
    from sst_desktop.run.cluster import run_on_cluster

    project = Project.open(make_project(tmp_path, sam2_checkpoint, GROUPS, REFS))
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install 'sst-desktop\[cluster\]'"):
        run_on_cluster(project, "tcp://127.0.0.1:8786")
    assert not (project.spec.root / "pred_masks").exists()


def test_merge_counts_only_files_this_run_wrote(tmp_path):
    # A task that wrote nothing (its group had no references) leaves an old prediction as it was:
    # that file is not this run's work, and the skipped count is not lowered for it. A file that
    # appeared since the start (a killed worker's attempt, the retry skipped it) is.
    (tmp_path / "old.png").write_bytes(b"an earlier run's prediction")
    project = SimpleNamespace(pred_mask_path=lambda pk: tmp_path / f"{pk}.png")
    plans = [SimpleNamespace(targets=[SimpleNamespace(pk="old"), SimpleNamespace(pk="new")])]
    merge = _Merge(RunOptions(overwrite=True), "spec.json", None, plans, project)
    without_refs = RunSummary(spec_path="spec.json", groups_without_references=["g"]).to_dict()
    merge.add(without_refs, WorkUnit("g", "g", ("old",)), project)
    (tmp_path / "new.png").write_bytes(b"written by a worker that then died")
    retried = RunSummary(spec_path="spec.json", skipped=1).to_dict()
    merge.add(retried, WorkUnit("h", "h", ("new",)), project)
    summary = merge.finish(1.0)
    assert (summary.written_pks, summary.written, summary.skipped) == (["new"], 1, 0)
