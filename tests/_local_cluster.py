"""A local Dask cluster for the cluster tests and benchmarks/bench_cluster.py: a scheduler and
single-thread workers, each its own `python -m dask` process bound to 127.0.0.1, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def cluster_env() -> dict[str, str]:
    """This tree first on the path, one torch thread per process (as the tests' local runs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def stop_process(proc: subprocess.Popen) -> None:
    """Stop one process started here, by its PID: TERM, then KILL if it does not exit."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)


class LocalCluster:
    """`with LocalCluster(2, folder) as cluster:` a scheduler at `cluster.address` and
    `cluster.workers` (their Popen objects), all ready; every process is stopped on exit.

    Logs go to `folder` (scheduler.log, worker0.log, ...)."""

    def __init__(
        self,
        workers: int,
        folder: Path,
        env: dict[str, str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.count = workers
        self.folder = Path(folder)
        self.env = env if env is not None else cluster_env()
        self.start_timeout_s = start_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.address = ""

    def _dask(self, *args: str, log: str) -> subprocess.Popen:
        with (self.folder / log).open("wb") as out:  # the child keeps its own copy of the file
            proc = subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def _scheduler_address(self, file: Path, scheduler: subprocess.Popen) -> str:
        """The address the scheduler wrote to its file, once it has; an error naming its log.

        The file is not written atomically: one read as soon as it exists may find it empty or
        cut short, so reading is retried until it parses, the scheduler exits or time is up."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                address = json.loads(file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError, TypeError):
                if scheduler.poll() is not None or time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"the Dask scheduler did not start: see {self.folder / 'scheduler.log'}"
                    ) from None
                time.sleep(0.2)
        if not address.startswith("tcp://127.0.0.1:"):
            raise RuntimeError(f"the Dask scheduler listens on {address}, not on 127.0.0.1")
        return address

    def __enter__(self) -> LocalCluster:
        from distributed import Client  # only the cluster tests and benchmark need it

        self.folder.mkdir(parents=True, exist_ok=True)
        file = self.folder / "scheduler.json"
        try:
            scheduler = self._dask(
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
                log="scheduler.log",
            )
            self.address = self._scheduler_address(file, scheduler)
            self.workers = [
                self._dask(
                    "worker",
                    self.address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    log=f"worker{index}.log",
                )
                for index in range(self.count)
            ]
            with Client(self.address, timeout="60s") as client:
                client.wait_for_workers(self.count, timeout=self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the workers, then the scheduler, each by its PID; one that will not stop does not
        keep the others running: all are tried, then an error names those left."""
        left: list[str] = []
        for proc in reversed(self.procs):
            try:
                stop_process(proc)
            except (OSError, subprocess.SubprocessError) as exc:
                left.append(f"{proc.pid} ({exc})")
        if left:
            raise RuntimeError(f"Dask processes still running: {', '.join(left)}")
