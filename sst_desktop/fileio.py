"""Atomic file writes: a reader or a crash never sees a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# A temp file whose writer cannot be checked (another machine on a shared drive, an older
# version's name, or a process id that may have been reused) counts as abandoned after this long;
# an atomic write takes seconds.
STALE_TEMP_AGE_S = 3600.0


def _read_umask() -> int:
    """The process umask (reading it means setting it, so this runs once, at import)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def host_tag() -> str:
    """A short, file-name-safe tag of this machine (hash of its host name)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


_HOST_TAG = host_tag()
# ".{name}.p{pid}-h{host}.{random}.tmp": the writer is known, so cleanup can tell live from dead.
_TEMP_OWNER = re.compile(r"\.p(\d+)-h([0-9a-f]{8})\.[^.]*\.tmp$")


def temp_prefix(path: Path) -> str:
    """The temp-file prefix for writes to `path` by this process."""
    return f".{path.name}.p{os.getpid()}-h{_HOST_TAG}."


def pid_alive(pid: int) -> bool | None:
    """Whether process `pid` of this machine runs; None where that cannot be checked safely."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32" or pid <= 0:
        return None  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return None
    return True


def special_file_kind(path: str | os.PathLike) -> str | None:
    """What `path` is when it exists but is neither a regular file nor a folder, else None.

    Reading a FIFO or a device blocks or never ends, so such paths are refused before opening.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None  # missing or unreadable: the caller's open() says so
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


@dataclass
class StagedFile:
    """A complete, fsynced temp file beside `path`, waiting to be renamed over it (or dropped)."""

    tmp: Path
    path: Path

    def commit(self) -> None:
        """Rename the temp file over `path` (atomic)."""
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Delete the temp file; `path` stays as it was."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temp file beside `path`, fsync it, then rename it over `path`."""
    stage_write(path, write).commit()


def stage_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> StagedFile:
    """The first half of `atomic_write`: the written, fsynced temp file, not yet renamed.

    Lets the slow part (encoding, writing, fsync) run on a worker while the caller decides, in
    order, which files to commit.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp names start with "." and end in ".tmp" so that globbing "*.png" never picks one up.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # closes fd whatever happens below
            # mkstemp creates 0600 files; give the result the permissions a plain open() would.
            # Best effort: FAT/exFAT drives and some network shares refuse chmod yet take the file.
            with contextlib.suppress(OSError):
                os.chmod(tmp, 0o666 & ~_UMASK)
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return StagedFile(tmp=Path(tmp), path=path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def temp_file_is_stale(path: Path, now: float | None = None) -> bool:
    """Whether a temp file was left by a write that will never finish.

    Its writer is named in the file name: a process of this machine that no longer runs means
    stale at once; a live writer never (the same process id for longer than a day is taken as
    reused); a writer elsewhere or unnamed, stale after `STALE_TEMP_AGE_S`.
    """
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return False
    found = _TEMP_OWNER.search(path.name)
    if found and found.group(2) == _HOST_TAG:
        alive = pid_alive(int(found.group(1)))
        if alive is False:
            return True
        if alive is True:
            return age > 24 * STALE_TEMP_AGE_S
    return age > STALE_TEMP_AGE_S


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete temp files of atomic writes whose writer died (see `temp_file_is_stale`).

    Temp files of writes still in progress, in this or another process, are left alone.
    """
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        if not temp_file_is_stale(tmp, now=now):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed
