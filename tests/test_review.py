"""Review flags: empty, nearly full, missing IDs; and the merge of flags over run summaries."""

from __future__ import annotations

import json

import numpy as np

from sst_desktop.fileio import atomic_write_json
from sst_desktop.review import (
    FLAG_EMPTY,
    FLAG_MISSING_ID,
    FLAG_NEARLY_FULL,
    FULL_COVERAGE_THRESHOLD,
    common_ids,
    flag_code,
    latest_flags,
    review_mask,
)


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
