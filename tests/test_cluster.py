"""--scheduler on a real Dask scheduler and two worker processes on loopback; one is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _run_helpers import REPO, make_project

from sst_desktop.data.project import Project
from sst_desktop.run.runner import RunOptions, run_inference

distributed = pytest.importorskip("distributed")

# 4 groups with a reference and 4 targets each: 16 targets, several tasks per worker.
GROUPS = {g: [(64, 56), (56, 64), (64, 64), (72, 56), (56, 72)] for g in "pqrs"}
REFS = dict.fromkeys("pqrs", 1)
TARGETS = sorted(f"{g}{i}" for g in "pqrs" for i in range(1, 5))
START_TIMEOUT_S = 120


def _dask(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args],
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-thread workers bound to 127.0.0.1; all stopped by PID."""
    procs: list[subprocess.Popen] = []
    file = tmp_path / "scheduler.json"
    try:
        procs.append(
            _dask(
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
                log=tmp_path / "scheduler.log",
            )
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = [
            _dask(
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                log=tmp_path / f"worker{i}.log",
            )
            for i in range(2)
        ]
        procs += workers
        client = distributed.Client(address, timeout="60s")
        try:
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
            yield address, workers, client
        finally:
            client.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, sam2_checkpoint, cluster):
    from sst_desktop.run.cluster import run_on_cluster

    address, workers, client = cluster
    import torch

    local = Project.open(make_project(tmp_path / "local", sam2_checkpoint, GROUPS, REFS))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): the same float sums
    try:
        assert sorted(run_inference(local, RunOptions()).written_pks) == TARGETS
    finally:
        torch.set_num_threads(threads)

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
    # Kill the worker once masks are being written and it is in the middle of a task.
    kept: dict[str, int] = {}
    while thread.is_alive():
        done = sorted(preds.glob("*.png")) if preds.is_dir() else []
        busy = client.processing(workers=[victim_address]).get(victim_address)
        if len(done) >= 2 and busy:
            kept = {p.stem: p.stat().st_ino for p in done}
            os.kill(victim.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert kept, "the run ended before the worker could be killed mid-task"
    assert victim.wait(timeout=30) == -signal.SIGKILL

    summary = outcome["summary"]
    assert summary.failed == [] and summary.ok
    assert sorted(p.stem for p in preds.glob("*.png")) == TARGETS
    for pk in TARGETS:  # every mask complete and equal to the local run's
        assert (preds / f"{pk}.png").read_bytes() == local.pred_mask_path(pk).read_bytes(), pk
    for pk, inode in kept.items():  # finished before the kill: kept, not predicted again
        assert (preds / f"{pk}.png").stat().st_ino == inode, pk
    assert summary.written + summary.skipped >= len(TARGETS) - len(kept)
    saved = json.loads(Path(summary.summary_path).read_text())
    assert saved["failed"] == [] and saved["spec_path"] == str(project.spec_path)
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == len(TARGETS)
    assert events[-1]["type"] == "run_end"
