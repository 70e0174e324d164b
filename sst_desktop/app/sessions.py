"""Labelling sessions: the working masks (saved IDs, candidates, refinements) of the frames being
labelled, kept in memory within a count and a byte budget (least recently used go first)."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sst_desktop.app.exposed import int_arg
from sst_desktop.app.media import ProjectStore, encode_png, working_mask_url
from sst_desktop.data import images, masks, palette
from sst_desktop.errors import UserError

MAX_SESSIONS = 8  # labelling sessions (working masks of one frame) kept in memory
# ... and their masks' bytes together (candidates of big photos are large); the session in use stays.
MAX_SESSION_BYTES = 512 * 1024 * 1024
MAX_REFINE_LOGITS = 8  # refined masks that keep SAM's low-res logits (a better base prompt)


@dataclass
class WorkingMask:
    """One selectable mask of a labelling session, stored cropped to its bounding box."""

    index: int
    crop: np.ndarray  # (h, w) bool array of the bounding box
    x0: int
    y0: int
    predicted_iou: float | None
    stability_score: float | None
    id: int | None
    source: str  # "saved" | "candidate" | "refined"
    area: int = 0
    base_index: int | None = None
    logits: np.ndarray | None = field(default=None, repr=False)  # SAM low-res logits (refined)

    @classmethod
    def from_full(cls, index: int, mask: Any, **fields: Any) -> WorkingMask:
        """Crop a full-image bool mask to its bounding box."""
        mask = np.asarray(mask).astype(bool, copy=False)
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            crop, x0, y0 = np.zeros((0, 0), dtype=bool), 0, 0
        else:
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            crop = mask[y0:y1, x0:x1].copy()
        return cls(index=index, crop=crop, x0=x0, y0=y0, area=int(ys.size), **fields)

    @property
    def bbox(self) -> list[int]:
        """[x0, y0, x1, y1] in image pixels, x1/y1 exclusive."""
        h, w = self.crop.shape
        return [self.x0, self.y0, self.x0 + w, self.y0 + h]

    def full(self, height: int, width: int) -> np.ndarray:
        """The mask as a (height, width) bool array."""
        out = np.zeros((height, width), dtype=bool)
        h, w = self.crop.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.crop
        return out

    def contains(self, x: float, y: float) -> bool:
        """True when image pixel (x, y) is inside the mask."""
        cx, cy = int(x) - self.x0, int(y) - self.y0
        h, w = self.crop.shape
        return 0 <= cx < w and 0 <= cy < h and bool(self.crop[cy, cx])


@dataclass
class LabelSession:
    """The working masks of one frame being labelled: saved IDs, candidates and refinements."""

    project_id: str
    pk: str
    width: int
    height: int
    image_path: Path
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    masks: list[WorkingMask] = field(default_factory=list)
    next_index: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def add(self, mask: Any, **fields: Any) -> WorkingMask:
        """Append a full-image mask as a new working mask with a fresh index."""
        with self.lock:
            wm = WorkingMask.from_full(self.next_index, mask, **fields)
            self.next_index += 1
            self.masks.append(wm)
            return wm

    def nbytes(self) -> int:
        """Bytes held by this session's masks and logits."""
        with self.lock:
            return sum(
                m.crop.nbytes + (m.logits.nbytes if m.logits is not None else 0) for m in self.masks
            )

    def keep_latest_logits(self, n: int) -> None:
        """Drop the logits of all but the `n` newest refined masks (each is ~256 KB)."""
        with self.lock:
            refined = [m for m in self.masks if m.logits is not None]
            for m in refined[: max(0, len(refined) - n)]:
                m.logits = None

    def get(self, index: Any) -> WorkingMask:
        """The working mask with this index, or a UserError."""
        index = int_arg(index, "mask index", 0)
        with self.lock:
            for wm in self.masks:
                if wm.index == index:
                    return wm
        raise UserError(
            f"Mask {index} of {self.pk!r} no longer exists (candidates were regenerated); "
            "select it again."
        )

    def mask_entry(self, wm: WorkingMask) -> dict[str, Any]:
        """The UI's view of one working mask (its PNG is fetched from `url`)."""
        return {
            "index": wm.index,
            "url": working_mask_url(self.project_id, self.pk, wm.index, self.nonce),
            "area": wm.area,
            "bbox": wm.bbox,
            "predicted_iou": wm.predicted_iou,
            "stability_score": wm.stability_score,
            "id": wm.id,
            "source": wm.source,
            "base_index": wm.base_index,
        }

    def mask_png(self, index: Any, max_side: int | None = None) -> tuple[bytes, str]:
        """RGBA PNG of one working mask coloured by its ID (or its index when unassigned), and a
        version tag for its ETag; `max_side` scales it down, as the label canvas keeps masks small."""
        wm = self.get(index)
        colour = palette.id_color(wm.id if wm.id else (wm.index % 254) + 1)
        out_w, out_h = masks.fit_size(self.width, self.height, max_side)
        rgba = np.zeros((out_h, out_w, 4), dtype=np.uint8)
        # Only the output pixels whose source lies in the mask's crop are looked at.
        xs = masks.nearest_indices(self.width, out_w) - wm.x0
        ys = masks.nearest_indices(self.height, out_h) - wm.y0
        crop_h, crop_w = wm.crop.shape
        cols = np.nonzero((xs >= 0) & (xs < crop_w))[0]
        rows = np.nonzero((ys >= 0) & (ys < crop_h))[0]
        if cols.size and rows.size:
            inside = wm.crop[np.ix_(ys[rows], xs[cols])]
            window = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            window[inside] = (*colour, 255)
        return encode_png(rgba), f"{self.nonce}-{wm.index}-{wm.id}-{out_w}"


def open_session(store: ProjectStore, project_id: Any, pk: Any) -> LabelSession:
    """A new session of a frame, holding the objects of its saved reference mask."""
    frame = store.frame(project_id, pk)
    image_path = store.image_path(project_id, frame.pk)
    width, height = images.image_size(image_path)
    session = LabelSession(
        project_id=str(project_id),
        pk=str(frame.pk),
        width=width,
        height=height,
        image_path=image_path,
    )
    ref_path = store.mask_path(project_id, "ref", frame.pk)
    if ref_path.is_file():
        saved = masks.read_mask(ref_path, expected_size=(width, height))
        for object_id in masks.object_ids(saved):
            session.add(
                saved == object_id,
                predicted_iou=None,
                stability_score=None,
                id=int(object_id),
                source="saved",
            )
    return session


class LabelSessions:
    """The open labelling sessions by (project id, pk), least recently used first."""

    def __init__(self, store: ProjectStore) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._sessions: OrderedDict[tuple[str, str], LabelSession] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._sessions

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with self._lock:
            return iter(list(self._sessions))

    def values(self) -> list[LabelSession]:
        """The open sessions, least recently used first."""
        with self._lock:
            return list(self._sessions.values())

    def get(self, project_id: Any, pk: Any, create: bool = True) -> LabelSession:
        """The session of a frame, created (with its saved reference) on first use."""
        key = (str(project_id), str(pk))
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                self.trim()
                return session
        if not create:
            # Its mask indices died with it: never resolve them against a fresh session.
            raise UserError(
                f"{pk!r} is not open for labelling (or other images were opened since): "
                "open it again."
            )
        session = open_session(self._store, project_id, pk)
        with self._lock:
            existing = self._sessions.get(key)
            if existing is not None:
                return existing
            self._sessions[key] = session
            self.trim()
        return session

    def find(self, project_id: Any, pk: Any) -> LabelSession | None:
        """The session of a frame if one is open (its place in the LRU order is kept)."""
        with self._lock:
            return self._sessions.get((str(project_id), str(pk)))

    def trim(self) -> None:
        """Evict the least recently used sessions beyond the count and byte budgets."""
        with self._lock:
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            sizes = {key: s.nbytes() for key, s in self._sessions.items()}
            total = sum(sizes.values())
            while total > MAX_SESSION_BYTES and len(self._sessions) > 1:
                key, _ = self._sessions.popitem(last=False)
                total -= sizes[key]

    def drop(self, project_id: Any, pk: Any) -> None:
        """Close the session of a frame (its mask indices die with it)."""
        with self._lock:
            self._sessions.pop((str(project_id), str(pk)), None)

    def drop_project(self, project_id: Any) -> None:
        """Close every session of a project."""
        with self._lock:
            for key in [k for k in self._sessions if k[0] == str(project_id)]:
                del self._sessions[key]

    def mask_png(
        self, project_id: Any, pk: Any, index: Any, max_side: int | None = None
    ) -> tuple[bytes, str]:
        """RGBA PNG of one working mask of an open session, and its version tag."""
        return self.get(project_id, pk, create=False).mask_png(index, max_side)
