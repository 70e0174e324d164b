"""Flags predictions that a person should look at: empty, nearly full, or missing an expected ID."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

# A prediction covering more than this fraction of the image is almost surely the background
# swallowed by an object (specimen photos always show some background).
FULL_COVERAGE_THRESHOLD = 0.95

FLAG_EMPTY = "empty"
FLAG_NEARLY_FULL = "nearly_full"
FLAG_MISSING_ID = "missing_id"


def common_ids(reference_masks: Iterable[np.ndarray]) -> set[int]:
    """IDs present in every reference mask (the ones each prediction is expected to contain)."""
    result: set[int] | None = None
    for mask in reference_masks:
        ids = {int(v) for v in np.unique(mask) if v != 0}
        result = ids if result is None else result & ids
    return result or set()


def review_mask(
    mask: np.ndarray,
    expected_ids: Iterable[int] = (),
    full_threshold: float = FULL_COVERAGE_THRESHOLD,
) -> list[str]:
    """Reasons to review one predicted ID mask; an empty list means it looks plausible."""
    total = int(mask.size)
    present = np.unique(mask)
    if total == 0 or (present.size == 1 and present[0] == 0):
        return [FLAG_EMPTY]
    reasons = []
    covered = int(np.count_nonzero(mask)) / total
    if covered > full_threshold:
        reasons.append(f"{FLAG_NEARLY_FULL} ({covered:.1%} of the image)")
    present_ids = {int(v) for v in present if v != 0}
    missing = sorted(set(expected_ids) - present_ids)
    if missing:
        ids = ", ".join(str(i) for i in missing)
        reasons.append(f"{FLAG_MISSING_ID} ({ids}: in every reference, not in the prediction)")
    return reasons


def flag_code(reason: str) -> str:
    """The stable code of a reason string ("nearly_full (97.0% ...)" -> "nearly_full")."""
    return reason.split(" ", 1)[0]


def latest_flags(root: str | os.PathLike) -> dict[str, list[str]]:
    """Review reasons per pk from the run summaries under `root/runs/`, later runs winning."""
    runs = Path(root) / "runs"
    flags: dict[str, list[str]] = {}
    if not runs.is_dir():
        return flags
    for path in sorted(runs.glob("*.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            written = [str(pk) for pk in summary.get("written_pks") or []]
            flagged = [(str(i["pk"]), list(i["reasons"])) for i in summary.get("flagged") or []]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a damaged or foreign summary only loses its own flags
        for pk in written:
            flags.pop(pk, None)
        flags.update(flagged)
    return flags
