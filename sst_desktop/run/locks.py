"""Which process may write which frames of a project: frame claims shared through the project folder.

The rule: runs of one project may overlap when they predict different frames (other groups, or
other frames of one group); a frame is never predicted by two runs at once. Each run claims the
frames it is about to write; frames another live run has claimed are skipped and reported, and
the claim is given back as soon as the frames are written.

On disk, under `<root>/runs/active/`:
- `<run id>.lock` — held with `filelock` for the whole life of the run; the operating system
  drops it when the process ends however it ends (kill -9, a node that dies), so a claim whose
  lock can be taken belongs to a dead run and is discarded;
- `<run id>.claim` — JSON `{id, pid, host, label, started, pks}`, the frames it holds now;
- `claims.lock` — taken briefly while a claim is read or changed, so two runs never grant
  themselves the same frame.

These are plain files and advisory locks, so they work between an app window, terminal runs,
shards and cluster workers whose processes share the project folder (on a network filesystem,
as far as it supports `flock`/`fcntl` locks; NFSv4 does).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sst_desktop import fileio
from sst_desktop.errors import UserError

CLAIMS_FOLDER = ("runs", "active")
GUARD_NAME = "claims.lock"
# The guard is held for one read-modify-write of small JSON files; a minute means a stuck peer.
GUARD_TIMEOUT_S = 60.0
# Folders where atomic writes of a project leave temp files when their process is killed.
TEMP_FOLDERS = (".", "ref_masks", "pred_masks", "runs", "runs/active")

# Claims opened by this process (a probe of our own lock could succeed where locks are
# per process, as fcntl locks on NFS are, and so must never be made).
_OWN_IDS: set[str] = set()
_OWN_LOCK = threading.Lock()


@dataclass
class ClaimResult:
    """Outcome of `FrameClaims.claim`: frames now held, and frames another live run holds."""

    granted: list[str] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)  # pk -> who holds it (one line)


def claims_dir(root: str | os.PathLike) -> Path:
    """The folder of a project's claim files."""
    return Path(root).joinpath(*CLAIMS_FOLDER)


def _owner_text(record: dict[str, Any]) -> str:
    """'pid 123 on host (label)' for messages."""
    text = f"pid {record.get('pid')} on {record.get('host')}"
    return f"{text} ({record['label']})" if record.get("label") else text


def _read_claim(path: Path) -> dict[str, Any] | None:
    """A claim file's record; None when it vanished or is unreadable (a write cut short)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_live(folder: Path, run_id: str) -> bool:
    """Whether the run `run_id` still holds its lock; a dead run's files are removed (under guard)."""
    with _OWN_LOCK:
        if run_id in _OWN_IDS:
            return True
    lock_path = folder / f"{run_id}.lock"
    probe = FileLock(lock_path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    try:
        (folder / f"{run_id}.claim").unlink(missing_ok=True)
    finally:
        probe.release()
        lock_path.unlink(missing_ok=True)
    return False


def _live_claims(folder: Path) -> list[dict[str, Any]]:
    """Records of the live runs' claims (dead runs' files are removed on the way)."""
    records = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for name in names:
        run_id, ext = os.path.splitext(name)
        if ext == ".lock" and name != GUARD_NAME and f"{run_id}.claim" not in names:
            _is_live(folder, run_id)  # a run that died between its two files: drop the lock
        if ext != ".claim" or not _is_live(folder, run_id):
            continue
        record = _read_claim(folder / name)
        if record is not None:
            records.append(record)
    return records


def active_claims(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The live runs holding frames of the project: `[{id, pid, host, label, started, pks}]`."""
    folder = claims_dir(root)
    if not folder.is_dir():
        return []
    with _guard(folder):
        return _live_claims(folder)


@contextlib.contextmanager
def _guard(folder: Path):
    """Hold `claims.lock` for one read-modify-write of the claim files."""
    lock = FileLock(folder / GUARD_NAME, timeout=GUARD_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"{folder / GUARD_NAME} has been held for over {GUARD_TIMEOUT_S:.0f} s by another "
            "process: check for a hung sst-desktop process, or a filesystem without file locks"
        ) from None
    try:
        yield
    finally:
        lock.release()


class FrameClaims:
    """One run's claims on frames of one project; open it for the run's life (a context manager).

    `claim(pks)` grants the frames no other live run holds; `release(pks)` gives them back
    (`close()` gives back everything). Thread-safe; a run in another process or on another
    machine sharing the folder sees the claims.
    """

    def __init__(self, root: str | os.PathLike, label: str = "") -> None:
        self.folder = claims_dir(root)
        self.label = label
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.id = f"{stamp}-{fileio.host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._held: dict[str, None] = {}  # claimed pks, in claim order
        self._lock: FileLock | None = None
        self._mutex = threading.Lock()

    def __enter__(self) -> FrameClaims:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def held(self) -> list[str]:
        """The frames this run holds now."""
        return list(self._held)

    def open(self) -> None:
        """Start holding this run's lock (the proof, to other runs, that it is alive)."""
        if self._lock is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with _guard(self.folder):
            lock = FileLock(self.folder / f"{self.id}.lock", timeout=0)
            lock.acquire()
            self._lock = lock
            with _OWN_LOCK:
                _OWN_IDS.add(self.id)
            self._write()

    def claim(self, pks: Iterable[str]) -> ClaimResult:
        """Hold every frame of `pks` that no other live run holds; report the others."""
        if self._lock is None:
            raise RuntimeError("FrameClaims.claim() before open()")
        wanted = [str(pk) for pk in pks]
        result = ClaimResult()
        with self._mutex, _guard(self.folder):
            taken: dict[str, str] = {}
            for record in _live_claims(self.folder):
                if record.get("id") == self.id:
                    continue
                owner = _owner_text(record)
                for pk in record.get("pks") or ():
                    taken.setdefault(str(pk), owner)
            for pk in dict.fromkeys(wanted):
                if pk in taken:
                    result.busy[pk] = taken[pk]
                else:
                    result.granted.append(pk)
                    self._held[pk] = None
            if result.granted:
                self._write()
        return result

    def release(self, pks: Iterable[str] | None = None) -> None:
        """Give back `pks` (all held frames when None)."""
        if self._lock is None:
            return
        with self._mutex, _guard(self.folder):
            if pks is None:
                self._held.clear()
            else:
                for pk in pks:
                    self._held.pop(str(pk), None)
            self._write()

    def close(self) -> None:
        """Give back every frame and remove this run's files."""
        if self._lock is None:
            return
        with self._mutex, _guard(self.folder):
            self._held.clear()
            (self.folder / f"{self.id}.claim").unlink(missing_ok=True)
            self._lock.release()
            (self.folder / f"{self.id}.lock").unlink(missing_ok=True)
            self._lock = None
            with _OWN_LOCK:
                _OWN_IDS.discard(self.id)

    def _write(self) -> None:
        """Write this run's claim file (caller holds the guard)."""
        record = {
            "id": self.id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "label": self.label,
            "started": self.id.split("-", 1)[0],
            "pks": list(self._held),
        }
        fileio.atomic_write_json(self.folder / f"{self.id}.claim", record)


def clean_stale_files(root: str | os.PathLike) -> int:
    """Remove what dead runs and killed writes left in a project: temp files and claims.

    Temp files of writes still going on (in any live process) are kept; see
    `fileio.temp_file_is_stale`. Returns the number of temp files removed.
    """
    root = Path(root)
    removed = sum(fileio.remove_stale_temp_files(root / sub) for sub in TEMP_FOLDERS)
    folder = claims_dir(root)
    if folder.is_dir():
        with contextlib.suppress(UserError, OSError), _guard(folder):
            _live_claims(folder)  # drops dead runs' claim and lock files
    return removed
