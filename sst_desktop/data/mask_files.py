"""Mask file names and listings: `{pk}.png` in `ref_masks/` and `pred_masks/`, read with one
directory listing per folder (no per-frame calls)."""

from __future__ import annotations

import os
import re

from sst_desktop.errors import UserError

MASK_SUFFIX = ".png"
# Characters never written raw into a mask file name (path separators, NUL, characters Windows
# forbids, and "%" itself so that escaping stays reversible).
_UNSAFE = set('/\\:*?"<>|%') | {chr(c) for c in range(32)} | {"\x7f"}
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)
}
# Longest mask file name we write (most file systems allow 255 bytes).
MAX_NAME_BYTES = 240


def _escape_char(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def mask_file_name(pk: str) -> str:
    """File name of a primary key's mask: `{pk}.png`, with unsafe characters %-escaped.

    Escaped: / \\ : * ? " < > | % NUL and control characters, a leading "." (no hidden files, no
    "..") and the first letter of Windows device names (CON, NUL, COM1...). Any other key is
    used as is, so masks of the original SST-GUI keep their names.
    """
    pk = str(pk)
    if not pk:
        raise UserError("An empty primary key has no mask file: fill in the key column.")
    name = "".join(_escape_char(ch) if ch in _UNSAFE else ch for ch in pk)
    if name.startswith("."):
        name = "%2E" + name[1:]
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = _escape_char(name[0]) + name[1:]
    name += MASK_SUFFIX
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UserError(
            f"Primary key {pk[:40]!r}... is too long for a mask file name "
            f"({len(name.encode('utf-8'))} bytes, limit {MAX_NAME_BYTES}): use a shorter key column."
        )
    return name


def pk_from_mask_file_name(name: str) -> str:
    """The primary key whose mask file is named `name` (inverse of `mask_file_name`)."""
    stem = name[: -len(MASK_SUFFIX)] if name.endswith(MASK_SUFFIX) else name

    def unescape(match: re.Match[str]) -> str:
        return bytes.fromhex(match.group(0).replace("%", "")).decode("utf-8", errors="replace")

    return re.sub(r"(?:%[0-9A-Fa-f]{2})+", unescape, stem)


def mask_names(folder: str | os.PathLike) -> set[str]:
    """Names of the (non-hidden) mask PNGs in `folder`; empty when it does not exist."""
    try:
        with os.scandir(folder) as entries:
            return {
                e.name
                for e in entries
                if e.name.endswith(MASK_SUFFIX) and not e.name.startswith(".")
            }
    except (FileNotFoundError, NotADirectoryError):
        return set()


def mask_times(folder: str | os.PathLike) -> dict[str, int]:
    """{file name: mtime in ns} of the (non-hidden) mask PNGs in `folder`: one listing."""
    out: dict[str, int] = {}
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if not e.name.endswith(MASK_SUFFIX) or e.name.startswith("."):
                    continue
                try:
                    out[e.name] = e.stat().st_mtime_ns
                except OSError:
                    continue  # removed while listing
    except (FileNotFoundError, NotADirectoryError):
        pass
    return out
