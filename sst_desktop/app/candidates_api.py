"""Candidate masks on the label screen: the project's candidate settings, and generations that
stream their candidates into the labelling session batch by batch (`candidate_updates`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sst_desktop.app.base import ApiBase
from sst_desktop.app.exposed import exposed, int_arg, score
from sst_desktop.app.sessions import LabelSession
from sst_desktop.data import candidate_settings
from sst_desktop.data.candidate_settings import CandidateParams
from sst_desktop.data.project import Project
from sst_desktop.engine import candidates
from sst_desktop.errors import UserError
from sst_desktop.run.jobs import Job

# Provisional candidates go to the session at most this often (each costs a duplicate pass).
UPDATE_EVERY_S = 0.5


def has_gpu(device: str) -> bool:
    """Whether the project's device setting means a GPU on this machine."""
    if device in ("cuda", "mps") or device.startswith("cuda:"):
        return True
    if device != "auto":
        return False
    import torch  # lazy: only the label screen's settings need it, after the window is up

    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (mps is not None and mps.is_available()))


def project_params(project: Project) -> CandidateParams:
    """The candidate settings a project's generations use."""
    spec = project.spec
    return candidate_settings.resolve(spec.candidates, has_gpu=has_gpu(spec.device))[1]


@dataclass
class CandidateFeed:
    """What one frame's latest generation changed in its session, numbered by version."""

    job_id: str
    version: int = 0
    added: dict[int, int] = field(default_factory=dict)  # mask index -> version it came in
    removed: list[tuple[int, int]] = field(default_factory=list)  # (version, mask index)
    by_uid: dict[int, int] = field(default_factory=dict)  # generator mask id -> mask index
    # Generator masks the user labelled or changed while the generation ran: theirs now, never
    # removed by a later batch's duplicate removal nor added a second time.
    claimed: set[int] = field(default_factory=set)
    started: bool = False

    def apply(
        self, session: LabelSession, found: list[Any], kept: set[int], replace: bool = False
    ) -> None:
        """Make the session's generated candidates `found` (old unlabelled ones go first)."""
        with session.lock:
            self.version += 1
            gone: set[int] = set()
            if not self.started:
                # New candidates replace old unassigned ones; saved, refined and labelled stay.
                self.started = True
                gone |= {
                    m.index
                    for m in session.masks
                    if m.source == "candidate" and m.id is None and m.index not in kept
                }
            wanted = {c.uid for c in found}
            by_index = {m.index: m for m in session.masks}
            for uid, index in list(self.by_uid.items()):
                mask = by_index.get(index)
                if mask is not None and (
                    mask.id is not None or mask.source != "candidate" or index in kept
                ):
                    self.claimed.add(uid)  # labelled: it stays as the user left it
                    del self.by_uid[uid]
                elif replace or uid not in wanted:  # replace: the final masks were cleaned up
                    gone.add(index)
                    del self.by_uid[uid]
            session.masks = [m for m in session.masks if m.index not in gone]
            self.removed += [(self.version, i) for i in sorted(gone)]
            for c in found:
                if c.uid in self.by_uid or c.uid in self.claimed:
                    continue
                wm = session.add(
                    c.mask,
                    predicted_iou=score(c.predicted_iou),
                    stability_score=score(c.stability_score),
                    id=None,
                    source="candidate",
                )
                self.by_uid[c.uid] = wm.index
                self.added[wm.index] = self.version


_feeds: dict[tuple[str, str], CandidateFeed] = {}
_feeds_lock = threading.Lock()


def feed_for(session: LabelSession, job_id: str) -> CandidateFeed:
    """A new feed for the generation `job_id` on this session's frame."""
    with _feeds_lock:
        old = _feeds.get((session.project_id, session.pk))
        feed = CandidateFeed(job_id=job_id, version=old.version if old else 0)
        _feeds[(session.project_id, session.pk)] = feed
        return feed


def stream_into_session(
    job: Job,
    handle: Any,
    image: Any,
    params: CandidateParams,
    session: LabelSession,
    kept: set[int],
    refiner: Any,
    key: Any,
) -> int | None:
    """Generate, putting candidates into `session` as they come; the final count, None if cancelled."""
    feed = feed_for(session, job.id)
    stream = candidates.stream_candidates(handle, image, params, refiner=refiner, key=key)
    with contextlib.closing(stream):  # a cancel ends the generator now, releasing its model use
        return _follow(job, stream, feed, params, session, kept)


def _follow(
    job: Job,
    stream: Iterator[Any],
    feed: CandidateFeed,
    params: CandidateParams,
    session: LabelSession,
    kept: set[int],
) -> int | None:
    """Progress and provisional candidates into the job and the session, per prompt batch."""
    last = 0.0
    for item in stream:
        if job.cancelled():
            return None
        if isinstance(item, candidates.CandidateUpdate):
            job.set_progress(item.done, item.total)
            now = time.monotonic()
            if now - last >= UPDATE_EVERY_S and item.done < item.total:
                feed.apply(session, item.candidates(), kept)
                job.set_message(f"{len(feed.by_uid)} candidate masks so far")
                last = time.monotonic()
        else:
            feed.apply(session, item, kept, replace=params.min_mask_region_area > 0)
            return len(item)
    return None


def image_key(session: LabelSession) -> tuple[str, str, str]:
    """The key of a frame's image embedding, shared by clicks and generation."""
    return (session.project_id, session.pk, str(session.image_path))


class CandidatesApi(ApiBase):
    """Candidate settings per project and the candidates a running generation has found."""

    @exposed
    def candidate_settings(self, project_id: str) -> dict[str, Any]:
        """The project's candidate settings with presets, plain-word labels and help."""
        spec = self._project(project_id).spec
        return candidate_settings.describe(spec.candidates, has_gpu=has_gpu(spec.device))

    @exposed
    def set_candidate_settings(
        self, project_id: str, preset: str, values: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Save a preset and changed settings in the project (values replace the preset's)."""
        if values is not None and not isinstance(values, dict):
            raise UserError('Candidate settings must be an object such as {"points_per_side": 16}.')
        if preset not in candidate_settings.PRESETS:
            raise UserError(
                f"Candidate preset {preset!r} is unknown: use one of "
                f"{', '.join(candidate_settings.PRESETS)}."
            )
        params = CandidateParams.from_dict({**candidate_settings.PRESETS[preset], **(values or {})})
        return self._save_candidate_settings(
            project_id, candidate_settings.to_stored(preset, params)
        )

    @exposed
    def reset_candidate_settings(self, project_id: str) -> dict[str, Any]:
        """Back to this machine's default preset (the project stores no candidate settings)."""
        return self._save_candidate_settings(project_id, None)

    def _save_candidate_settings(self, project_id: str, stored: dict | None) -> dict[str, Any]:
        self._set_spec_field(self._project(project_id), "candidates", stored)
        return self.candidate_settings(project_id)

    @exposed
    def candidate_updates(self, project_id: str, pk: str, since: Any = 0) -> dict[str, Any]:
        """Candidates added to and removed from the frame's session after version `since`."""
        since = int_arg(since, "since", 0)
        session = self._session(project_id, pk, create=False)
        with _feeds_lock:
            feed = _feeds.get((session.project_id, session.pk))
        if feed is None:
            return {"version": 0, "job_id": None, "masks": [], "removed": []}
        with session.lock:
            present = {m.index: m for m in session.masks}
            masks = [
                session.mask_entry(present[i])
                for i, v in feed.added.items()
                if v > since and i in present
            ]
            removed = [i for v, i in feed.removed if v > since]
            return {
                "version": feed.version,
                "job_id": feed.job_id,
                "masks": masks,
                "removed": removed,
            }
