"""The local Dask cluster helper of the cluster tests and benchmark (tests/_local_cluster.py):
reading the scheduler's file and stopping its processes, without starting Dask."""

from __future__ import annotations

import json
import subprocess

import pytest
from _local_cluster import LocalCluster


class _Scheduler:
    """Stands for the scheduler process: running; each poll lets it write the next version of
    its file (as `distributed` does, in pieces, not atomically)."""

    def __init__(self, file, versions: list[str]) -> None:
        self.file, self.versions, self.polls = file, versions, 0

    def poll(self) -> None:
        self.polls += 1
        if self.versions:
            self.file.write_text(self.versions.pop(0))


def test_the_scheduler_file_is_read_again_until_it_is_complete(tmp_path):
    file = tmp_path / "scheduler.json"
    file.write_text("")  # created, nothing written yet
    whole = json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:40123"})
    scheduler = _Scheduler(file, [whole[:20], whole])  # then cut short, then whole
    cluster = LocalCluster(1, tmp_path)
    assert cluster._scheduler_address(file, scheduler) == "tcp://127.0.0.1:40123"
    assert scheduler.polls == 2  # read three times: empty, cut short, whole


def test_a_scheduler_file_that_never_completes_is_an_error_naming_the_log(tmp_path):
    file = tmp_path / "scheduler.json"
    file.write_text('{"address": ')
    cluster = LocalCluster(1, tmp_path, start_timeout_s=0.5)
    with pytest.raises(RuntimeError, match=r"did not start: see .*scheduler\.log"):
        cluster._scheduler_address(file, _Scheduler(file, []))


def test_stop_goes_on_past_a_process_that_will_not_stop(tmp_path):
    # A process stuck where even SIGKILL does not end it (uninterruptible I/O) must not leave the
    # processes after it running.
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(3)]
    stuck = procs[1]
    real_wait = stuck.wait

    def never_exits(timeout=None):
        raise subprocess.TimeoutExpired(cmd="sleep", timeout=timeout)

    stuck.wait = never_exits
    cluster = LocalCluster(2, tmp_path)
    cluster.procs = list(procs)
    try:
        with pytest.raises(RuntimeError, match=rf"still running: {stuck.pid}\b"):
            cluster.stop()
        # Stopped in reverse order of starting: the one before and the one after the stuck one.
        assert procs[2].poll() is not None
        assert procs[0].poll() is not None
    finally:
        stuck.wait = real_wait
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
