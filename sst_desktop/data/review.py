"""Flags predictions that a person should look at: empty, nearly full, or missing an expected ID."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sst_desktop.data.labels import describe_ids
from sst_desktop.data.masks import id_counts
from sst_desktop.fileio import atomic_write_text

# A prediction covering more than this fraction of the image is almost surely the background
# swallowed by an object (specimen photos always show some background).
FULL_COVERAGE_THRESHOLD = 0.95

FLAG_EMPTY = "empty"
FLAG_NEARLY_FULL = "nearly_full"
FLAG_MISSING_ID = "missing_id"
FLAG_LOW_CONFIDENCE = "low_confidence"

# SAM2 predicts, per object, an "object score" logit and blanks the object's mask where it is
# below 0 (probability 0.5): the model's own judgement that the object is not in the image. An ID
# that some reference holds but that the model scores below this is flagged as low confidence.
LOW_CONFIDENCE_LOGIT = 0.0


def common_ids(reference_masks: Iterable[np.ndarray]) -> set[int]:
    """IDs present in every reference mask (the ones each prediction is expected to contain)."""
    result: set[int] | None = None
    for mask in reference_masks:
        ids = {int(v) for v in np.unique(mask) if v != 0}
        result = ids if result is None else result & ids
    return result or set()


def low_confidence_ids(
    object_scores: Mapping[int, float] | None,
    reference_ids: Iterable[int],
    threshold: float = LOW_CONFIDENCE_LOGIT,
) -> list[int]:
    """IDs the references contain that the model scores as absent (object-score logit < threshold)."""
    if not object_scores:
        return []
    wanted = {int(i) for i in reference_ids}
    return sorted(int(i) for i, s in object_scores.items() if int(i) in wanted and s < threshold)


def low_confidence_flag(
    counts: Sequence[int],
    expected_ids: Iterable[int],
    object_scores: Mapping[int, float] | None,
    labels: Mapping[int, str] | None = None,
    threshold: float = LOW_CONFIDENCE_LOGIT,
) -> str | None:
    """The low-confidence reason for one prediction, or None (a pure function of its inputs).

    `counts` are the mask's pixels per ID (index = ID, e.g. from `id_counts`): they only serve
    to skip an empty prediction, which has its own flag. `expected_ids` are the IDs the group's
    references contain; `object_scores` the engine's per-object score logits for this frame."""
    if not any(counts[1:]):
        return None
    low = low_confidence_ids(object_scores, expected_ids, threshold)
    if not low:
        return None
    scores = ", ".join(f"{object_scores[i]:.2f}" for i in low)  # type: ignore[index]
    return (
        f"{FLAG_LOW_CONFIDENCE} ({describe_ids(labels, low)}: the model scores it as absent, "
        f"object score {scores} < {threshold:g})"
    )


def review_mask(
    mask: np.ndarray,
    expected_ids: Iterable[int] = (),
    full_threshold: float = FULL_COVERAGE_THRESHOLD,
    labels: Mapping[int, str] | None = None,
) -> list[str]:
    """Reasons to review one predicted ID mask; an empty list means it looks plausible."""
    return review_counts(id_counts(mask), expected_ids, full_threshold, labels)


def review_counts(
    counts: Sequence[int],
    expected_ids: Iterable[int] = (),
    full_threshold: float = FULL_COVERAGE_THRESHOLD,
    labels: Mapping[int, str] | None = None,
) -> list[str]:
    """`review_mask` from the mask's pixel count per ID (index = ID), e.g. from `id_counts`."""
    total = int(sum(counts))
    covered_pixels = total - int(counts[0]) if total else 0
    if total == 0 or covered_pixels == 0:
        return [FLAG_EMPTY]
    reasons = []
    covered = covered_pixels / total
    if covered > full_threshold:
        reasons.append(f"{FLAG_NEARLY_FULL} ({covered:.1%} of the image)")
    present_ids = {i for i, n in enumerate(counts) if i and n}
    missing = sorted(set(expected_ids) - present_ids)
    if missing:
        ids = describe_ids(labels, missing)
        reasons.append(f"{FLAG_MISSING_ID} ({ids}: in every reference, not in the prediction)")
    return reasons


def flag_code(reason: str) -> str:
    """The stable code of a reason string ("nearly_full (97.0% ...)" -> "nearly_full")."""
    return reason.split(" ", 1)[0]


# Merged flags per project, so the GUI's listings cost one directory scan, not a read of every
# summary; the index file gives a fresh process the same head start.
FLAGS_INDEX_NAME = "flags.index"  # not "*.json": tools glob runs/*.json for summaries
_INDEX_VERSION = 1
_CACHE_LIMIT = 32  # projects kept in memory; each holds one dict of its flagged frames

Listing = dict[str, tuple[int, int]]  # summary file name -> (mtime_ns, size)


@dataclass
class _Merged:
    covered: Listing  # the summaries these flags merge
    flags: dict[str, list[str]]


_cache: OrderedDict[str, _Merged] = OrderedDict()
_cache_lock = threading.Lock()


def clear_flags_cache() -> None:
    """Forget the in-process merged flags (tests; a fresh process starts this way)."""
    with _cache_lock:
        _cache.clear()


def _listing(runs: Path) -> Listing | None:
    """The run summaries in `runs` with their stamps (one scandir); None if there is no folder."""
    out: Listing = {}
    try:
        with os.scandir(runs) as entries:
            for entry in entries:
                if not entry.name.endswith(".json"):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue  # removed while listing
                out[entry.name] = (st.st_mtime_ns, st.st_size)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return {}  # unreadable folder: no flags, as before
    return out


def _apply_summary(flags: dict[str, list[str]], path: Path) -> None:
    """Merge one summary over `flags`: its written pks lose older flags, its flagged pks get its."""
    try:
        with open(path, "rb") as f:
            summary = json.load(f)
        written = [str(pk) for pk in summary.get("written_pks") or []]
        flagged = [(str(i["pk"]), list(i["reasons"])) for i in summary.get("flagged") or []]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return  # a damaged or foreign summary only loses its own flags
    for pk in written:
        flags.pop(pk, None)
    flags.update(flagged)


def _extend(base: _Merged | None, listing: Listing, runs: Path) -> _Merged | None:
    """`base` plus the summaries added after it, or None when one it merged changed or went."""
    if base is None:
        return None
    if any(listing.get(name) != stamp for name, stamp in base.covered.items()):
        return None
    newest = max(base.covered, default="")
    added = sorted(name for name in listing if name not in base.covered)
    if added and added[0] <= newest:
        return None  # an older summary appeared: merge order changes, so rebuild
    flags = dict(base.flags)
    for name in added:
        _apply_summary(flags, runs / name)
    return _Merged(covered=dict(listing), flags=flags)


def _rebuild(listing: Listing, runs: Path) -> _Merged:
    flags: dict[str, list[str]] = {}
    for name in sorted(listing):
        _apply_summary(flags, runs / name)
    return _Merged(covered=dict(listing), flags=flags)


def _read_index(runs: Path) -> _Merged | None:
    """The index file's merge, or None when it is missing, damaged or of another version."""
    try:
        with open(runs / FLAGS_INDEX_NAME, "rb") as f:
            data = json.load(f)
        if data.get("version") != _INDEX_VERSION:
            return None
        covered = {str(n): (int(m), int(s)) for n, (m, s) in data["summaries"].items()}
        flags = {str(pk): [str(r) for r in reasons] for pk, reasons in data["flags"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return _Merged(covered=covered, flags=flags)


def _write_index(runs: Path, merged: _Merged) -> None:
    """Save the merge beside the summaries; best effort (a read-only folder just rebuilds)."""
    data = {
        "version": _INDEX_VERSION,
        "summaries": {name: list(stamp) for name, stamp in sorted(merged.covered.items())},
        "flags": merged.flags,
    }
    with contextlib.suppress(OSError):
        atomic_write_text(runs / FLAGS_INDEX_NAME, json.dumps(data, ensure_ascii=False))


def _merged(root: str | os.PathLike, persist: bool) -> _Merged | None:
    """The current merge of `root/runs/` (None without the folder), from memory when unchanged."""
    runs = Path(root) / "runs"
    key = os.path.abspath(runs)
    listing = _listing(runs)
    with _cache_lock:
        if listing is None:
            _cache.pop(key, None)
            return None
        cached = _cache.get(key)
        if cached is not None and cached.covered == listing and not persist:
            _cache.move_to_end(key)
            return cached
        index = _read_index(runs) if cached is None or persist else None
        if index is not None and index.covered == listing:
            merged = index
        else:
            merged = _extend(cached, listing, runs) or _extend(index, listing, runs)
            merged = merged or _rebuild(listing, runs)
            # Save what a fresh process would otherwise redo; a run's end always saves.
            if persist or cached is None:
                _write_index(runs, merged)
        _cache[key] = merged
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_LIMIT:
            _cache.popitem(last=False)
        return merged


def latest_flags(root: str | os.PathLike) -> dict[str, list[str]]:
    """Review reasons per pk from the run summaries under `root/runs/`, later runs winning.

    Cached in memory and in `runs/flags.index`, both checked against the folder's listing (names,
    mtimes, sizes) on every call, so an added, edited or deleted summary is always taken in."""
    merged = _merged(root, persist=False)
    return dict(merged.flags) if merged is not None else {}


def update_flags_index(root: str | os.PathLike) -> None:
    """Bring `root/runs/flags.index` up to date with the summaries (the runner calls this)."""
    _merged(root, persist=True)
