"""Candidates streamed into a labelling session: what a later batch may and may not take away."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sst_desktop.app.candidates_api import CandidateFeed
from sst_desktop.app.sessions import LabelSession
from sst_desktop.engine.candidates import Candidate

H, W = 20, 30


def _candidate(uid: int, x0: int) -> Candidate:
    """A real Candidate: a 5x5 square at column x0."""
    mask = np.zeros((H, W), dtype=bool)
    mask[5:10, x0 : x0 + 5] = True
    return Candidate(
        area=25,
        predicted_iou=0.9,
        stability_score=0.95,
        bbox=(x0, 5, 5, 5),
        point=(x0 + 2.0, 7.0),
        small_mask=mask,
        full_size=(H, W),
        uid=uid,
    )


def _session() -> LabelSession:
    return LabelSession(project_id="p", pk="a", width=W, height=H, image_path=Path("a.png"))


def _by_area_origin(session: LabelSession) -> dict[int, tuple[int | None, str]]:
    """Column of each working mask -> (its ID, its source)."""
    return {int(m.x0): (m.id, m.source) for m in session.masks}


def test_a_labelled_candidate_stays_when_a_later_batch_drops_it():
    session, feed = _session(), CandidateFeed(job_id="j")
    feed.apply(session, [_candidate(0, 0), _candidate(1, 10)], kept=set())
    labelled = next(m for m in session.masks if m.x0 == 0)
    labelled.id = 1  # the user gives the first candidate ID 1 while the generation runs
    # The next batch's duplicate removal keeps a better mask instead of both first ones.
    feed.apply(session, [_candidate(2, 20)], kept=set())
    assert _by_area_origin(session) == {0: (1, "candidate"), 20: (None, "candidate")}
    # The final list (cleaned up: replace) names the labelled mask again: not added twice.
    feed.apply(session, [_candidate(0, 0), _candidate(2, 20)], kept=set(), replace=True)
    masks = _by_area_origin(session)
    assert masks == {0: (1, "candidate"), 20: (None, "candidate")}
    assert len(session.masks) == 2
    assert np.array_equal(labelled.full(H, W), _candidate(0, 0).mask)


def test_unlabelled_candidates_still_follow_the_generator():
    session, feed = _session(), CandidateFeed(job_id="j")
    feed.apply(session, [_candidate(0, 0), _candidate(1, 10)], kept=set())
    feed.apply(session, [_candidate(1, 10), _candidate(2, 20)], kept=set())
    assert sorted(_by_area_origin(session)) == [10, 20]
