"""Atomic writes: the old file survives a failed write, and no temp file is left behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from sst_desktop import fileio


def test_atomic_write_creates_parents_and_content(tmp_path):
    target = tmp_path / "a" / "b" / "spec.json"
    fileio.atomic_write_json(target, {"x": 1, "name": "café"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": 1, "name": "café"}
    assert [p.name for p in target.parent.iterdir()] == ["spec.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")

    def explode(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileio.atomic_write(target, explode)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    target = tmp_path / "out.txt"
    fileio.atomic_write_text(target, "hi")
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode == 0o666 & ~fileio._UMASK
    assert mode & stat.S_IRGRP or fileio._UMASK & stat.S_IRGRP


def _dead_pid() -> int:
    """The id of a process of this machine that has ended."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    return int(proc.stdout)


def test_remove_stale_temp_files_only_removes_temp_names(tmp_path):
    (tmp_path / f".1.png.p{_dead_pid()}-h{fileio.host_tag()}.abc.tmp").write_bytes(b"x")
    (tmp_path / "1.png").write_bytes(b"x")
    assert fileio.remove_stale_temp_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["1.png"]
    assert fileio.remove_stale_temp_files(tmp_path / "missing") == 0


def test_write_succeeds_where_chmod_is_refused_and_leaks_no_descriptor(tmp_path, monkeypatch):
    # FAT/exFAT drives and some network shares refuse chmod (EPERM): the write must still land.
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "chmod", refuse)
    opened_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    target = tmp_path / "mask.png"
    fileio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]
    if opened_before is not None:
        assert len(os.listdir("/proc/self/fd")) == opened_before
