"""Review flags: empty, nearly full, missing IDs; and the merge of flags over run summaries."""

from __future__ import annotations

import json
import os

import numpy as np

from sst_desktop.data.masks import id_counts
from sst_desktop.data.review import (
    FLAG_EMPTY,
    FLAG_MISSING_ID,
    FLAG_NEARLY_FULL,
    FLAGS_INDEX_NAME,
    FULL_COVERAGE_THRESHOLD,
    clear_flags_cache,
    common_ids,
    flag_code,
    latest_flags,
    review_mask,
    update_flags_index,
)
from sst_desktop.fileio import atomic_write_json


def _mask(shape=(20, 20), fill=None) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for value, (y0, y1, x0, x1) in (fill or {}).items():
        mask[y0:y1, x0:x1] = value
    return mask


def test_empty_prediction_is_flagged_empty_only():
    assert review_mask(_mask(), expected_ids={1, 2}) == [FLAG_EMPTY]


def test_plausible_prediction_has_no_flags():
    mask = _mask(fill={1: (0, 5, 0, 5), 2: (10, 15, 10, 15)})
    assert review_mask(mask, expected_ids={1, 2}) == []


def test_nearly_full_threshold_is_strictly_above():
    mask = np.ones((10, 10), np.uint8)
    mask.flat[:5] = 0  # exactly 95 % covered: not flagged
    assert FULL_COVERAGE_THRESHOLD == 0.95
    assert review_mask(mask) == []
    mask.flat[:4] = 1  # 99 % covered
    reasons = review_mask(mask)
    assert [flag_code(r) for r in reasons] == [FLAG_NEARLY_FULL]
    assert "99.0%" in reasons[0]


def test_missing_common_id_is_flagged_with_the_id():
    mask = _mask(fill={1: (0, 5, 0, 5)})
    reasons = review_mask(mask, expected_ids={1, 3})
    assert [flag_code(r) for r in reasons] == [FLAG_MISSING_ID]
    assert "(3:" in reasons[0]


def test_common_ids_is_the_intersection_over_references():
    a = _mask(fill={1: (0, 2, 0, 2), 2: (5, 7, 5, 7), 3: (9, 10, 9, 10)})
    b = _mask(fill={2: (0, 2, 0, 2), 3: (5, 7, 5, 7)})
    assert common_ids([a, b]) == {2, 3}
    assert common_ids([]) == set()
    # An ID only some references have is not expected: its absence is no flag.
    assert review_mask(_mask(fill={2: (0, 3, 0, 3), 3: (5, 8, 5, 8)}), common_ids([a, b])) == []


def test_latest_flags_later_runs_win(tmp_path):
    runs = tmp_path / "runs"
    atomic_write_json(
        runs / "20250101T000000.000000Z.json",
        {
            "written_pks": ["a", "b"],
            "flagged": [{"pk": "a", "reasons": ["empty"]}, {"pk": "b", "reasons": ["empty"]}],
        },
    )
    atomic_write_json(
        runs / "20250102T000000.000000Z.json",
        {"written_pks": ["a", "c"], "flagged": [{"pk": "c", "reasons": ["missing_id (2: ...)"]}]},
    )
    (runs / "20250103T000000.000000Z.json").write_text("{broken", encoding="utf-8")
    assert latest_flags(tmp_path) == {"b": ["empty"], "c": ["missing_id (2: ...)"]}
    assert latest_flags(tmp_path / "nowhere") == {}
    json.loads((runs / "20250101T000000.000000Z.json").read_text())


def test_latest_flags_survive_summaries_of_the_wrong_shape(tmp_path):
    # Valid JSON that is no run summary (hand-edited, another tool's file) only loses its own flags.
    runs = tmp_path / "runs"
    atomic_write_json(
        runs / "20250101T000000.000000Z.json",
        {"written_pks": ["a"], "flagged": [{"pk": "a", "reasons": ["empty"]}]},
    )
    atomic_write_json(runs / "20250102T000000.000000Z.json", ["not", "a", "summary"])
    atomic_write_json(runs / "20250103T000000.000000Z.json", {"flagged": [{"pk": "x"}]})
    atomic_write_json(runs / "20250104T000000.000000Z.json", {"written_pks": None, "flagged": 3})
    assert latest_flags(tmp_path) == {"a": ["empty"]}


# --- merged flags are cached: in memory and in runs/flags.index ---------------------------------


def _summary(runs, stamp: str, written, flagged) -> None:
    atomic_write_json(
        runs / f"2025{stamp}T000000.000000Z.json",
        {
            "written_pks": written,
            "flagged": [{"pk": pk, "reasons": r} for pk, r in flagged.items()],
        },
    )


def _count_opens(monkeypatch) -> list[str]:
    """Names of the files opened from now on (both ways a module or pathlib opens files)."""
    import builtins
    import io

    opened: list[str] = []
    real = io.open

    def counting(file, *args, **kwargs):
        if not isinstance(file, int):  # os.fdopen (atomic writes) opens descriptors
            opened.append(os.path.basename(os.fspath(file)))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(io, "open", counting)
    return opened


def test_latest_flags_warm_call_reads_no_summary(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for n in range(5):
        _summary(runs, f"010{n}", [f"p{n}"], {f"p{n}": ["empty"]})
    expected = {f"p{n}": ["empty"] for n in range(5)}
    assert latest_flags(tmp_path) == expected
    opened = _count_opens(monkeypatch)
    assert latest_flags(tmp_path) == expected
    assert opened == []


def test_latest_flags_reads_only_a_new_summary_and_later_runs_still_win(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    _summary(runs, "0101", ["a", "b"], {"a": ["empty"], "b": ["empty"]})
    _summary(runs, "0102", ["c"], {"c": ["empty"]})
    assert latest_flags(tmp_path) == {"a": ["empty"], "b": ["empty"], "c": ["empty"]}
    opened = _count_opens(monkeypatch)
    # "a" rewritten without a flag: its flag goes; "b" gets a new one.
    _summary(runs, "0103", ["a", "b"], {"b": ["missing_id (2: ...)"]})
    opened.clear()
    assert latest_flags(tmp_path) == {"b": ["missing_id (2: ...)"], "c": ["empty"]}
    assert opened == ["20250103T000000.000000Z.json"]


def test_latest_flags_notices_edited_deleted_and_older_summaries(tmp_path):
    runs = tmp_path / "runs"
    _summary(runs, "0101", ["a"], {"a": ["empty"]})
    _summary(runs, "0103", ["b"], {"b": ["empty"]})
    assert latest_flags(tmp_path) == {"a": ["empty"], "b": ["empty"]}
    # Edited in place (another size): the merge is redone.
    _summary(runs, "0101", ["a"], {"a": ["nearly_full (99.0% of the image)"]})
    assert latest_flags(tmp_path)["a"] == ["nearly_full (99.0% of the image)"]
    # A summary sorting before the newest one (copied in): merge order changes, it loses to 0103.
    _summary(runs, "0102", ["b"], {})
    assert latest_flags(tmp_path) == {"a": ["nearly_full (99.0% of the image)"], "b": ["empty"]}
    (runs / "20250103T000000.000000Z.json").unlink()
    assert latest_flags(tmp_path) == {"a": ["nearly_full (99.0% of the image)"]}
    for path in runs.glob("*.json"):
        path.unlink()
    assert latest_flags(tmp_path) == {}
    (runs / FLAGS_INDEX_NAME).unlink()
    runs.rmdir()
    assert latest_flags(tmp_path) == {}


def test_fresh_process_reads_the_index_not_the_summaries(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for n in range(4):
        _summary(runs, f"010{n}", [f"p{n}", "x"], {f"p{n}": ["empty"]})
    update_flags_index(tmp_path)
    expected = {f"p{n}": ["empty"] for n in range(4)}
    index = json.loads((runs / FLAGS_INDEX_NAME).read_text(encoding="utf-8"))
    assert index["flags"] == expected and len(index["summaries"]) == 4
    clear_flags_cache()
    opened = _count_opens(monkeypatch)
    assert latest_flags(tmp_path) == expected
    assert opened == [FLAGS_INDEX_NAME]
    # A run saved by a tool that does not update the index: only that summary is read on top.
    _summary(runs, "0109", ["p0"], {})
    clear_flags_cache()
    opened.clear()
    assert latest_flags(tmp_path) == {k: v for k, v in expected.items() if k != "p0"}
    assert sorted(opened) == sorted([FLAGS_INDEX_NAME, "20250109T000000.000000Z.json"])


def test_damaged_or_stale_index_falls_back_to_the_summaries(tmp_path):
    runs = tmp_path / "runs"
    _summary(runs, "0101", ["a"], {"a": ["empty"]})
    _summary(runs, "0102", ["b"], {"b": ["empty"]})
    for damaged in ("{broken", '{"version": 99}', '{"version": 1, "summaries": 3, "flags": {}}'):
        (runs / FLAGS_INDEX_NAME).write_text(damaged, encoding="utf-8")
        clear_flags_cache()
        assert latest_flags(tmp_path) == {"a": ["empty"], "b": ["empty"]}
    # An index claiming a summary that is not there (or has other stamps) is not trusted.
    atomic_write_json(
        runs / FLAGS_INDEX_NAME,
        {
            "version": 1,
            "summaries": {"20250101T000000.000000Z.json": [1, 1]},
            "flags": {"z": ["x"]},
        },
    )
    clear_flags_cache()
    assert latest_flags(tmp_path) == {"a": ["empty"], "b": ["empty"]}


def test_callers_cannot_change_the_cached_flags(tmp_path):
    _summary(tmp_path / "runs", "0101", ["a"], {"a": ["empty"]})
    latest_flags(tmp_path).clear()
    assert latest_flags(tmp_path) == {"a": ["empty"]}


def test_low_confidence_flags_ids_the_model_scores_absent():
    from sst_desktop.data.review import (
        FLAG_LOW_CONFIDENCE,
        LOW_CONFIDENCE_LOGIT,
        flag_code,
        low_confidence_flag,
        low_confidence_ids,
    )

    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 1
    counts = id_counts(mask)
    scores = {1: 5.0, 2: -3.25, 3: -0.5}
    # ID 3 is in no reference of the group: the model calling it absent is no news.
    assert low_confidence_ids(scores, {1, 2}) == [2]
    reason = low_confidence_flag(counts, {1, 2}, scores, labels={2: "body"})
    assert flag_code(reason) == FLAG_LOW_CONFIDENCE
    assert "2 body" in reason and "-3.25" in reason and f"< {LOW_CONFIDENCE_LOGIT:g}" in reason
    # Exactly at the threshold is SAM2's "present"; no scores (or all confident) means no flag.
    assert low_confidence_flag(counts, {1, 2}, {1: 0.0, 2: 0.0}) is None
    assert low_confidence_flag(counts, {1, 2}, {}) is None
    assert low_confidence_flag(counts, {1, 2}, None) is None
    # An empty prediction (background only) already has its own flag.
    assert low_confidence_flag(id_counts(np.zeros((4, 4), np.uint8)), {1, 2}, scores) is None
    assert low_confidence_flag([16] + [0] * 255, {1, 2}, scores) is None


def test_missing_id_reason_names_the_part():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 1
    reasons = review_mask(mask, {1, 2}, labels={1: "wings", 2: "body"})
    assert reasons == ["missing_id (2 body: in every reference, not in the prediction)"]
