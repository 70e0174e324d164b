"""The Python side of every screen: the JS API (pywebview `js_api` and `/api/<name>` JSON POSTs)."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sst_desktop import __version__
from sst_desktop.errors import UserError
from sst_desktop.run.jobs import Job, JobManager, describe_error

log = logging.getLogger(__name__)

# The only names the bottle app dispatches to (pywebview exposes the same public methods).
API_METHODS = (
    "app_info",
    "list_projects",
    "startup_project",
    "delete_project",
    "pick_file",
    "pick_folder",
    "upload_file",
    "preview_csv",
    "validate_config",
    "create_project",
    "list_groups",
    "group_frames",
    "group_changes",
    "sample_references",
    "model_status",
    "download_model",
    "set_checkpoint",
    "project_settings",
    "update_project_settings",
    "open_frame",
    "generate_candidates",
    "refine_mask",
    "masks_at",
    "save_reference",
    "delete_reference",
    "use_as_reference",
    "start_run",
    "job_status",
    "cancel_job",
    "list_jobs",
)

MASK_MODES = ("original", "position", "binary")
MODEL_JOB = "model"  # jobs that use SAM2 run one at a time
MAX_SESSIONS = 8  # labelling sessions (working masks of one frame) kept in memory
# ... and their masks' bytes together (candidates of big photos are large); the session in use stays.
MAX_SESSION_BYTES = 512 * 1024 * 1024
MAX_REFINE_LOGITS = 8  # refined masks that keep SAM's low-res logits (a better base prompt)
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
PREVIEW_ROWS = 8
# What `update_project_settings` may change (the CSV, keys and grouping define the project).
SETTINGS_KEYS = ("name", "sam2", "checkpoint", "device", "image_size", "mask_mode")


class _Cancelled(Exception):
    """Raised inside a job's progress callback to stop the work after a cancel."""


class ApiError(RuntimeError):
    """An unexpected exception, reworded as "Class: message" for the UI (traceback in the log)."""

    _sst_described = True


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets into JSON-able Python values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    return str(value)


def _exposed(method):
    """Wrap a JS API method: plain JSON results; unexpected errors logged and reworded."""

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return _plain(method(self, *args))
        except UserError:
            raise
        except Exception as exc:
            log.error("api %s failed", method.__name__, exc_info=exc)
            raise ApiError(describe_error(exc)) from exc

    return wrapper


def _get(entry: Any, key: str, default: Any = None) -> Any:
    """A field of a registry entry, whether it is a dict or an object."""
    if isinstance(entry, dict):
        return entry.get(key, default)
    return getattr(entry, key, default)


def _int_arg(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer argument from JS, with a clear error naming it."""
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a whole number, got {value!r}.") from None
    if low is not None and number < low or high is not None and number > high:
        raise UserError(f"{name} must be between {low} and {high}, got {number}.")
    return number


@dataclass
class WorkingMask:
    """One selectable mask of a labelling session, stored cropped to its bounding box."""

    index: int
    crop: Any  # (h, w) bool array of the bounding box
    x0: int
    y0: int
    predicted_iou: float | None
    stability_score: float | None
    id: int | None
    source: str  # "saved" | "candidate" | "refined"
    area: int = 0
    base_index: int | None = None
    logits: Any = field(default=None, repr=False)  # SAM low-res logits of a refined mask

    @classmethod
    def from_full(cls, index: int, mask: Any, **fields: Any) -> WorkingMask:
        """Crop a full-image bool mask to its bounding box."""
        import numpy as np

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

    def full(self, height: int, width: int) -> Any:
        """The mask as a (height, width) bool array."""
        import numpy as np

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
                m.crop.nbytes + (m.logits.nbytes if hasattr(m.logits, "nbytes") else 0)
                for m in self.masks
            )

    def keep_latest_logits(self, n: int) -> None:
        """Drop the logits of all but the `n` newest refined masks (each is ~256 KB)."""
        with self.lock:
            refined = [m for m in self.masks if m.logits is not None]
            for m in refined[: max(0, len(refined) - n)]:
                m.logits = None

    def get(self, index: Any) -> WorkingMask:
        """The working mask with this index, or a UserError."""
        index = _int_arg(index, "mask index", 0)
        with self.lock:
            for wm in self.masks:
                if wm.index == index:
                    return wm
        raise UserError(
            f"Mask {index} of {self.pk!r} no longer exists (candidates were regenerated); "
            "select it again."
        )


class Api:
    """Every method the UI calls; public methods are exposed, state stays in `_private` fields."""

    def __init__(self, mode: str = "window", view: list[str] | None = None) -> None:
        self._mode = mode
        self._view_paths = list(view) if view else None
        self._jobs = JobManager()
        self._lock = threading.RLock()
        self._projects: dict[str, Any] = {}  # project id -> open Project
        self._sessions: OrderedDict[tuple[str, str], LabelSession] = OrderedDict()
        self._refiners: dict[int, Any] = {}
        self._window: Any = None  # the pywebview window, for native file dialogs
        self._sample_done = threading.Event()
        self._setup_started = False
        # The sample project this launch created, until the UI claims it (it opens it once).
        self._startup_project_id: str | None = None
        self._startup_claimed = False

    # ------------------------------------------------------------------ lifecycle (private)
    def _attach_window(self, window: Any) -> None:
        self._window = window

    def _start_background_setup(
        self, warm_up: bool = True, wait_for: Callable[[], Any] | None = None
    ) -> None:
        """Create the sample project on first launch, then import torch/sam2 ahead of need.

        `wait_for` (e.g. "the window is shown") runs first in the thread; the setup counts as
        started at once, so UI calls made meanwhile wait for the sample instead of missing it.
        """
        with self._lock:
            if self._setup_started:
                return
            self._setup_started = True
        threading.Thread(
            target=self._background_setup, args=(warm_up, wait_for), name="setup", daemon=True
        ).start()

    def _background_setup(self, warm_up: bool, wait_for: Callable[[], Any] | None = None) -> None:
        try:
            if wait_for is not None:
                try:
                    wait_for()
                except Exception as exc:  # a failed wait must not cost the sample project
                    log.warning("setup wait failed: %s", describe_error(exc))
            self._ensure_sample()
        finally:
            self._sample_done.set()
        if warm_up:
            t0 = time.monotonic()
            try:
                import sam2  # noqa: F401
                import torch  # noqa: F401

                log.info("torch and sam2 imported in %.1f s", time.monotonic() - t0)
            except Exception as exc:  # the first model use reports the problem properly
                log.warning("warm-up import failed: %s", describe_error(exc))

    def _ensure_sample(self) -> None:
        try:
            from sst_desktop.data import registry

            entry = registry.ensure_sample_project()
            if entry is not None:
                with self._lock:
                    if not self._startup_claimed:
                        self._startup_project_id = str(_get(entry, "id"))
        except Exception as exc:  # never block the app on the sample
            log.error("could not create the sample project", exc_info=exc)

    def _shutdown(self) -> None:
        for job in self._jobs.jobs(running_only=True):
            job.cancel.set()

    # ------------------------------------------------------------------ lookups (private)
    def _entries(self) -> list[Any]:
        from sst_desktop.data import registry

        return list(registry.list_projects())

    def _entry(self, project_id: str) -> Any:
        for entry in self._entries():
            if str(_get(entry, "id")) == str(project_id):
                return entry
        raise UserError(
            f"Project {project_id!r} is not in the project list (deleted or forgotten); "
            "go back to Projects and open or re-create it."
        )

    def _project(self, project_id: Any) -> Any:
        """The open Project of a registered id (opened once, then cached)."""
        project_id = str(project_id)
        with self._lock:
            project = self._projects.get(project_id)
        if project is not None:
            return project
        from sst_desktop.data.project import Project

        entry = self._entry(project_id)
        spec_path = _get(entry, "spec_path")
        project = Project.open(spec_path)
        with self._lock:
            self._projects[project_id] = project
        return project

    def _forget_project(self, project_id: str) -> None:
        with self._lock:
            self._projects.pop(str(project_id), None)
            for key in [k for k in self._sessions if k[0] == str(project_id)]:
                del self._sessions[key]

    def _frame(self, project_id: Any, pk: Any) -> Any:
        project = self._project(project_id)
        try:
            frame = project.frame(str(pk))
        except KeyError:
            frame = None
        if frame is None:
            raise UserError(f"Project {project_id!r} has no image with primary key {pk!r}.")
        return frame

    def _frame_image_path(self, project_id: str, pk: str) -> Path:
        """Image of a frame of a registered project (the server never takes a path from a URL)."""
        return Path(self._frame(project_id, pk).image_path)

    def _mask_path(self, project_id: str, kind: str, pk: str) -> Path:
        """ref/pred mask path of a frame of a registered project."""
        frame = self._frame(project_id, pk)
        project = self._project(project_id)
        if kind == "ref":
            return Path(project.ref_mask_path(frame.pk))
        if kind == "pred":
            return Path(project.pred_mask_path(frame.pk))
        raise UserError(f"Mask kind must be 'ref' or 'pred', got {kind!r}.")

    def _working_mask_png(
        self, project_id: str, pk: str, index: int, max_side: int | None = None
    ) -> tuple[bytes, str]:
        """RGBA PNG of one working mask, coloured by its ID (or its index when unassigned).

        `max_side` scales it down (nearest pixel centre), as the label canvas keeps masks small.
        """
        import numpy as np
        from PIL import Image

        from sst_desktop.data import palette

        session = self._session(project_id, pk, create=False)
        wm = session.get(index)
        colour = palette.id_color(wm.id if wm.id else (wm.index % 254) + 1)
        width, height = session.width, session.height
        scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
        rgba = np.zeros((out_h, out_w, 4), dtype=np.uint8)
        # Only the output pixels whose source lies in the mask's crop are looked at.
        xs = ((np.arange(out_w) + 0.5) * width / out_w).astype(np.int64) - wm.x0
        ys = ((np.arange(out_h) + 0.5) * height / out_h).astype(np.int64) - wm.y0
        crop_h, crop_w = wm.crop.shape
        cols = np.nonzero((xs >= 0) & (xs < crop_w))[0]
        rows = np.nonzero((ys >= 0) & (ys < crop_h))[0]
        if cols.size and rows.size:
            inside = wm.crop[np.ix_(ys[rows], xs[cols])]
            window = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            window[inside] = (*colour, 255)
        buf = io.BytesIO()
        Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=3)
        return buf.getvalue(), f"{session.nonce}-{wm.index}-{wm.id}-{out_w}"

    def _session(self, project_id: Any, pk: Any, create: bool = True) -> LabelSession:
        """The labelling session of a frame, created (with its saved reference) on first use."""
        key = (str(project_id), str(pk))
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                self._trim_sessions()
                return session
        if not create:
            # Its mask indices died with it: never resolve them against a fresh session.
            raise UserError(
                f"{pk!r} is not open for labelling (or other images were opened since): "
                "open it again."
            )
        from sst_desktop.data import images, masks

        frame = self._frame(project_id, pk)
        project = self._project(project_id)
        image_path = Path(frame.image_path)
        width, height = images.image_size(image_path)
        session = LabelSession(
            project_id=str(project_id),
            pk=str(frame.pk),
            width=width,
            height=height,
            image_path=image_path,
        )
        ref_path = Path(project.ref_mask_path(frame.pk))
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
        with self._lock:
            existing = self._sessions.get(key)
            if existing is not None:
                return existing
            self._sessions[key] = session
            self._trim_sessions()
        return session

    def _trim_sessions(self) -> None:
        """Evict the least recently used sessions beyond the count and byte budgets."""
        with self._lock:
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            sizes = {key: s.nbytes() for key, s in self._sessions.items()}
            total = sum(sizes.values())
            while total > MAX_SESSION_BYTES and len(self._sessions) > 1:
                key, _ = self._sessions.popitem(last=False)
                total -= sizes[key]

    def _drop_session(self, project_id: Any, pk: Any) -> None:
        with self._lock:
            self._sessions.pop((str(project_id), str(pk)), None)

    def _mask_entry(self, session: LabelSession, wm: WorkingMask) -> dict[str, Any]:
        pid = quote(session.project_id, safe="")
        url = f"/candidate/{pid}/{quote(session.pk, safe='')}/{wm.index}.png?v={session.nonce}"
        return {
            "index": wm.index,
            "url": url,
            "area": wm.area,
            "bbox": wm.bbox,
            "predicted_iou": wm.predicted_iou,
            "stability_score": wm.stability_score,
            "id": wm.id,
            "source": wm.source,
            "base_index": wm.base_index,
        }

    def _frame_dict(self, session: LabelSession) -> dict[str, Any]:
        with session.lock:
            masks = [self._mask_entry(session, wm) for wm in session.masks]
        return {
            "pk": session.pk,
            "width": session.width,
            "height": session.height,
            "image_url": self._image_url(session.project_id, session.pk),
            "masks": masks,
        }

    @staticmethod
    def _image_url(project_id: str, pk: str) -> str:
        return f"/image/{quote(str(project_id), safe='')}/{quote(str(pk), safe='')}"

    @staticmethod
    def _mask_url(project_id: str, kind: str, pk: str, path: Path) -> str | None:
        """Coloured mask URL, versioned by the file's mtime so a rewritten mask is refetched."""
        try:
            version = path.stat().st_mtime_ns
        except OSError:
            return None
        pid, key = quote(str(project_id), safe=""), quote(str(pk), safe="")
        return f"/mask/{pid}/{kind}/{key}.png?color=1&v={version:x}"

    def _model(self, project: Any, job: Job | None = None) -> Any:
        """The project's SAM2 handle (spec's variant, checkpoint, device, image size)."""
        from sst_desktop.engine import sam2_model

        spec = project.spec
        if job is not None:
            job.set_message(f"loading SAM2 ({spec.sam2}); the first time takes a while")

        def progress(done: int, total: int | None) -> None:
            if job is None:
                return
            if job.cancelled():
                raise UserError("Model download cancelled; it resumes where it stopped next time.")
            mb = done / 1e6
            text = f"downloading {spec.sam2}: {mb:.0f} MB" + (
                f" of {total / 1e6:.0f} MB" if total else ""
            )
            job.message = text

        return sam2_model.get_model(
            spec.sam2,
            device=spec.device,
            checkpoint=spec.checkpoint,
            image_size=spec.image_size,
            progress=progress,
        )

    def _refiner(self, handle: Any) -> Any:
        from sst_desktop.engine import candidates

        with self._lock:
            refiner = self._refiners.get(id(handle))
            if refiner is None:
                refiner = candidates.Refiner(handle)
                self._refiners = {id(handle): refiner}  # one model in use at a time
            return refiner

    def _summary(self, entry: Any) -> dict[str, Any]:
        """A `list_projects` item: the registry entry plus counts from the project folder."""
        summary = {
            "id": str(_get(entry, "id")),
            "name": _get(entry, "name"),
            "root": _get(entry, "root"),
            "spec_path": _get(entry, "spec_path"),
            "missing": bool(_get(entry, "missing", False)),
            "images": None,
            "groups": None,
            "refs": None,
            "preds": None,
            "error": None,
        }
        if summary["missing"]:
            summary["error"] = f"{summary['spec_path']} is missing (moved or deleted)."
            return summary
        try:
            project = self._project(summary["id"])
            counts = project.status()
            summary.update(
                images=counts["images"],
                groups=len(project.groups()),
                refs=counts["refs"],
                preds=counts["preds"],
            )
        except UserError as exc:
            summary["missing"] = True
            summary["error"] = str(exc)
        return summary

    # ================================================================== the JS API
    @_exposed
    def app_info(self) -> dict[str, Any]:
        """Static facts for the UI: version, mode, palette, model variants, defaults."""
        from sst_desktop.data import palette
        from sst_desktop.engine import checkpoints, models

        variants = []
        for v in models.VARIANTS.values():
            try:
                present = checkpoints.find_checkpoint(v) is not None
            except UserError:
                present = False
            variants.append(
                {"name": v.name, "label": v.label, "approx_mb": v.approx_mb, "present": present}
            )
        return {
            "version": __version__,
            "mode": self._mode,
            "palette": list(palette.PALETTE_HEX),
            "variants": variants,
            "default_variant": models.DEFAULT_VARIANT,
            "mask_modes": list(MASK_MODES),
            "devices": _device_choices(),
            "candidate_defaults": _candidate_defaults(),
            "view": self._view_items(),
            "data_dir": str(_data_dir()),
        }

    def _view_items(self) -> list[dict[str, Any]] | None:
        """`--view` masks resolved to project/pk/kind (registering the project if needed)."""
        if not self._view_paths:
            return None
        from sst_desktop.app import viewer
        from sst_desktop.data import registry

        items = []
        for path in self._view_paths:
            try:
                project, pk, kind = viewer.find_mask_context(path)
                entry = registry.register(project.spec_path)  # idempotent: keeps its id
                pid = str(entry["id"])
                frame = project.frame(pk)
                items.append(
                    {
                        "path": str(path),
                        "project_id": pid,
                        "pk": pk,
                        "kind": kind,
                        "group_key": str(frame.group_key),
                        "image_url": self._image_url(pid, pk),
                        "mask_url": self._mask_url(pid, kind, pk, Path(path)),
                    }
                )
            except UserError as exc:
                items.append({"path": str(path), "error": str(exc)})
        return items

    @_exposed
    def list_projects(self) -> list[dict[str, Any]]:
        """Known projects with counts (images, groups, references, predictions)."""
        # On first launch the sample project is being created; wait a little for it.
        if self._setup_started:
            self._sample_done.wait(timeout=20)
        return [self._summary(e) for e in self._entries()]

    @_exposed
    def startup_project(self) -> dict[str, Any]:
        """The sample project this launch created, the first time only (the UI opens it)."""
        if self._setup_started:
            self._sample_done.wait(timeout=20)
        with self._lock:
            project_id, self._startup_project_id = self._startup_project_id, None
            self._startup_claimed = True  # a sample finished after a time-out is not opened later
        return {"project_id": project_id}

    @_exposed
    def delete_project(self, project_id: str, delete_files: bool = False) -> dict[str, Any]:
        """Forget a project; with `delete_files` also remove its folder (spec, masks, runs)."""
        from sst_desktop.data import registry

        self._entry(project_id)  # clear error for an unknown id
        for job in self._jobs.jobs(running_only=True):
            if getattr(job, "project_id", None) == str(project_id):
                raise UserError("A job is still running on this project: cancel it first.")
        result = registry.delete_project(str(project_id), delete_files=bool(delete_files))
        self._forget_project(project_id)
        return {"ok": True, "deleted": result.get("deleted", []), "kept": result.get("kept", [])}

    @_exposed
    def pick_file(self, kind: str = "csv") -> dict[str, Any]:
        """Native open-file dialog (window mode): a CSV or a SAM2 checkpoint."""
        window = self._require_window("choose a file")
        import webview

        types = {
            "csv": ("CSV files (*.csv)", "All files (*.*)"),
            "checkpoint": ("SAM2 checkpoints (*.pt;*.pth)", "All files (*.*)"),
        }.get(kind)
        if types is None:
            raise UserError(f"pick_file kind must be 'csv' or 'checkpoint', got {kind!r}.")
        chosen = window.create_file_dialog(webview.FileDialog.OPEN, file_types=types)
        return {"path": _first(chosen)}

    @_exposed
    def pick_folder(self) -> dict[str, Any]:
        """Native folder dialog (window mode)."""
        window = self._require_window("choose a folder")
        import webview

        return {"path": _first(window.create_file_dialog(webview.FileDialog.FOLDER))}

    def _require_window(self, what: str) -> Any:
        if self._window is None:
            raise UserError(
                f"Cannot {what} with a dialog in the browser: upload the file, or type its path "
                "on the server."
            )
        return self._window

    @_exposed
    def upload_file(self, name: str, data_base64: str) -> dict[str, Any]:
        """Save a browser upload (base64) under the data folder; returns its server path."""
        from sst_desktop import fileio

        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(str(name or "upload")))
        safe = safe.lstrip(".") or "upload"
        if "," in data_base64[:100] and data_base64.startswith("data:"):
            data_base64 = data_base64.split(",", 1)[1]  # a data: URL from FileReader
        if len(data_base64) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
            raise UserError(
                f"{name} is larger than {MAX_UPLOAD_BYTES // 2**20} MB; copy it to the server instead."
            )
        try:
            data = base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise UserError(f"Upload of {name} is damaged (not base64); try again.") from None
        dest = _data_dir() / "uploads" / uuid.uuid4().hex[:8] / safe
        fileio.atomic_write_bytes(dest, data)
        return {"path": str(dest)}

    @_exposed
    def preview_csv(self, path: str) -> dict[str, Any]:
        """Columns, first rows and row count of a CSV."""
        from sst_desktop.data import table

        df = table.read_csv(path)
        rows = df.head(PREVIEW_ROWS).fillna("").astype(str).values.tolist()
        return {"columns": [str(c) for c in df.columns], "rows": rows, "n_rows": len(df)}

    @_exposed
    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Live validation of a new project's configuration (nothing is created)."""
        from sst_desktop.data import project as project_mod

        config = _clean_config(config)
        if not config.get("csv"):
            return {"ok": False, "errors": ["Choose a CSV file first."], "warnings": []}
        report = project_mod.validate_config(
            config["csv"],
            config.get("primary_key") or "",
            config.get("img_path") or "",
            config.get("image_root"),
            _str_list(config.get("group_by")),
        )
        out = report.to_dict()
        settings_error = _settings_error(config)
        if settings_error:
            out["errors"] = [*out.get("errors", []), settings_error]
            out["ok"] = False
        return out

    @_exposed
    def create_project(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create (and register) a project; returns its `list_projects` summary."""
        from sst_desktop.data.project import Project

        config = _clean_config(config)
        if not config.get("csv"):
            raise UserError("Choose a CSV file first.")
        image_size = config.get("image_size")
        project = Project.create(
            config.get("name") or "",
            config["csv"],
            config.get("primary_key") or "",
            config.get("img_path") or "",
            config.get("image_root"),
            _str_list(config.get("group_by")),
            sam2=config.get("sam2"),
            mask_mode=config.get("mask_mode") or "original",
            device=config.get("device") or "auto",
            image_size=_int_arg(image_size, "Image size") if image_size is not None else None,
            checkpoint=config.get("checkpoint"),
            folder=config.get("folder"),
        )
        project_id = project.id
        self._forget_project(project_id)
        return self._summary(self._entry(project_id))

    @_exposed
    def list_groups(self, project_id: str) -> list[dict[str, Any]]:
        """Every group with its counts: images, references, predictions, flagged."""
        from sst_desktop.data import review

        project = self._project(project_id)
        from sst_desktop.data.project import mask_file_name

        root = Path(project.spec.root)
        refs = _mask_names(root / "ref_masks")
        preds = _mask_names(root / "pred_masks")
        flags = review.latest_flags(root)
        out = []
        for group in project.groups():
            names = [(str(f.pk), mask_file_name(f.pk)) for f in group.frames]
            out.append(
                {
                    "key": str(group.key),
                    "label": str(group.label),
                    "values": _plain(group.values),
                    "images": len(names),
                    "refs": sum(n in refs for _, n in names),
                    "preds": sum(n in preds for _, n in names),
                    "flagged": sum(pk in flags and n in preds for pk, n in names),
                }
            )
        return out

    @_exposed
    def group_frames(self, project_id: str, group_key: str) -> list[dict[str, Any]]:
        """The frames of one group with image, thumbnail and mask URLs and review flags."""
        return self.group_changes(project_id, group_key, None)["frames"]

    @_exposed
    def group_changes(
        self, project_id: str, group_key: str, since: int | None = None
    ) -> dict[str, Any]:
        """`group_frames` entries whose mask was written at or after `since` (None = all), and the
        cursor (microseconds) for the next call: a screen following a run fetches only what changed."""
        from sst_desktop.data import review
        from sst_desktop.data.project import pk_from_mask_file_name

        project = self._project(project_id)
        group = self._group(project, group_key)
        # Files renamed into place just after this scan may carry a slightly older mtime: the
        # cursor overlaps a margin, and an entry sent twice is harmless.
        cursor = time.time_ns() // 1000 - CHANGE_MARGIN_US
        frames = group.frames
        if since is not None:
            since = _int_arg(since, "since")
            changed = set()
            for folder in (project.spec.ref_masks_dir, project.spec.pred_masks_dir):
                changed |= _mask_files_since(Path(folder), since * 1000)
            wanted = {pk_from_mask_file_name(name) for name in changed}
            frames = [f for f in frames if str(f.pk) in wanted]
        flags = review.latest_flags(project.spec.root) if frames else {}
        pid = str(project_id)
        out = []
        for frame in frames:
            pk = str(frame.pk)
            pred_url = self._mask_url(pid, "pred", pk, Path(project.pred_mask_path(pk)))
            out.append(
                {
                    "pk": pk,
                    "image_url": self._image_url(pid, pk),
                    "thumb_url": f"/thumb/{quote(pid, safe='')}/{quote(pk, safe='')}",
                    "ref_url": self._mask_url(pid, "ref", pk, Path(project.ref_mask_path(pk))),
                    "pred_url": pred_url,
                    "flagged": flags.get(pk, []) if pred_url else [],
                }
            )
        return {"frames": out, "cursor": cursor}

    @staticmethod
    def _group(project: Any, group_key: str) -> Any:
        try:
            group = project.group(str(group_key))
        except KeyError:
            group = None
        if group is None:
            raise UserError(f"Group {group_key!r} is not in this project (its CSV changed?).")
        return group

    @_exposed
    def sample_references(
        self, project_id: str, group_key: str, n: int = 1, seed: int = 0
    ) -> dict[str, Any]:
        """N reference frames of a group drawn with a seed (as the original SST-GUI did)."""
        from sst_desktop.data import project as project_mod

        project = self._project(project_id)
        group = self._group(project, group_key)
        n = _int_arg(n, "Number of references", 1)
        seed = _int_arg(seed, "Seed")
        frames = project_mod.sample_references(list(group.frames), n, seed)
        return {"pks": [str(getattr(f, "pk", f)) for f in frames]}

    @_exposed
    def model_status(self, variant: str) -> dict[str, Any]:
        """Whether a variant's checkpoint is present (and where), and whether it is loaded."""
        from sst_desktop.engine import checkpoints, models

        v = models.resolve_variant(variant)
        path = checkpoints.find_checkpoint(v)
        loaded = False
        sam2_model = sys.modules.get("sst_desktop.engine.sam2_model")
        if sam2_model is not None:
            loaded = any(h.variant.name == v.name for h in sam2_model.loaded_models())
        return {
            "variant": v.name,
            "label": v.label,
            "present": path is not None,
            "path": str(path) if path else None,
            "approx_mb": v.approx_mb,
            "loaded": loaded,
            "downloading": any(
                getattr(j, "variant", None) == v.name
                for j in self._jobs.jobs(kind="download", running_only=True)
            ),
        }

    @_exposed
    def download_model(self, variant: str) -> dict[str, Any]:
        """Download a variant's checkpoint in a job (resumable, verified)."""
        from sst_desktop.engine import checkpoints, models

        v = models.resolve_variant(variant)
        for job in self._jobs.jobs(kind="download", running_only=True):
            if getattr(job, "variant", None) == v.name:
                return {"job_id": job.id}

        def work(job: Job) -> dict[str, Any]:
            job.set_message(f"downloading {v.label}")

            def progress(done: int, total: int | None) -> None:
                if job.cancelled():
                    raise UserError("Download cancelled; it resumes where it stopped next time.")
                job.set_progress(done, total or 0)
                job.message = f"{done / 1e6:.0f} MB" + (
                    f" of {total / 1e6:.0f} MB" if total else ""
                )

            path = checkpoints.ensure_checkpoint(v, progress=progress)
            job.set_message(f"{v.checkpoint_name} ready")
            return {"variant": v.name, "path": str(path)}

        job = self._jobs.start(
            "download", work, message=f"downloading {v.label}", attrs={"variant": v.name}
        )
        return {"job_id": job.id}

    @_exposed
    def set_checkpoint(self, project_id: str, path: str | None) -> dict[str, Any]:
        """Use a checkpoint file for a project (checked against its variant); None = default."""
        from sst_desktop.data import spec as spec_mod
        from sst_desktop.engine import checkpoints

        project = self._project(project_id)
        spec = project.spec
        if path:
            found = checkpoints.find_checkpoint(spec.sam2, explicit=path)
            checkpoints.verify_checkpoint(spec.sam2, found)
            spec.checkpoint = Path(found).absolute()
        else:
            spec.checkpoint = None
        spec_mod.save_spec(spec, project.spec_path or spec.spec_path)
        return {"ok": True, "checkpoint": str(spec.checkpoint) if spec.checkpoint else None}

    @_exposed
    def project_settings(self, project_id: str) -> dict[str, Any]:
        """A project's editable settings: name, SAM2 variant, checkpoint, device, size, mask mode."""
        return _settings_dict(self._project(project_id).spec)

    @_exposed
    def update_project_settings(self, project_id: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Change an existing project's settings (all checked first); returns the saved settings."""
        from sst_desktop.data import registry
        from sst_desktop.data import spec as spec_mod
        from sst_desktop.engine import checkpoints

        if not isinstance(settings, dict):
            raise UserError('Project settings must be an object such as {"image_size": 256}.')
        unknown = sorted(set(settings) - set(SETTINGS_KEYS))
        if unknown:
            raise UserError(
                f"Unknown project setting(s) {', '.join(map(repr, unknown))}: use "
                f"{', '.join(SETTINGS_KEYS)}."
            )
        project = self._project(project_id)
        with self._lock:
            for job in self._jobs.jobs(running_only=True):
                if getattr(job, "project_id", None) == str(project_id):
                    raise UserError(
                        f"A {job.kind} job of this project is running: wait for it or cancel it, "
                        "then change the settings."
                    )
        spec = project.spec
        clean = _clean_config(settings)
        size = clean.get("image_size", spec.image_size)
        new = {
            "name": (clean.get("name") or spec.name) if "name" in clean else spec.name,
            "sam2": clean.get("sam2") or spec.sam2,
            "device": clean.get("device") or spec.device,
            "mask_mode": clean.get("mask_mode") or spec.mask_mode,
            "image_size": _int_arg(size, "Image size") if size is not None else spec.image_size,
        }
        problem = _settings_error(new)
        if problem:
            raise UserError(problem)
        # A changed variant must still match the checkpoint the project keeps using.
        checkpoint = clean.get("checkpoint", spec.checkpoint)
        if checkpoint is not None and ("checkpoint" in clean or new["sam2"] != spec.sam2):
            found = checkpoints.find_checkpoint(new["sam2"], explicit=checkpoint)
            checkpoints.verify_checkpoint(new["sam2"], found)
            checkpoint = Path(found).absolute()
        old = {k: getattr(spec, k) for k in (*new, "checkpoint")}
        for key, value in {**new, "checkpoint": checkpoint}.items():
            setattr(spec, key, value)
        try:
            spec_mod.check_spec_values(spec, source=f"Project {project.name!r}")
            spec_mod.save_spec(spec, project.spec_path or spec.spec_path)
        except Exception:
            for key, value in old.items():  # nothing half-applied in memory
                setattr(spec, key, value)
            raise
        if new["name"] != old["name"]:
            registry.register(spec.spec_path, name=spec.display_name)
        return _settings_dict(spec)

    @_exposed
    def open_frame(self, project_id: str, pk: str) -> dict[str, Any]:
        """Start (or resume) labelling a frame: its size, image URL and working masks."""
        return self._frame_dict(self._session(project_id, pk))

    @_exposed
    def generate_candidates(
        self,
        project_id: str,
        pk: str,
        params: dict[str, Any] | None = None,
        keep: list[int] | None = None,
    ) -> dict[str, Any]:
        """Automatic candidate masks for a frame, in a job; its result is `open_frame`'s dict.

        `keep`: indices of masks the UI has labelled but not saved yet; they survive like saved ones.
        """
        from sst_desktop.engine import candidates

        session = self._session(project_id, pk, create=False)
        project = self._project(project_id)
        cand_params = candidates.CandidateParams.from_dict(params or {})
        if keep is not None and not isinstance(keep, (list, tuple)):
            raise UserError("keep must be a list of mask indices.")
        kept = {_int_arg(i, "mask index", 0) for i in keep or ()}

        def work(job: Job) -> dict[str, Any] | None:
            from sst_desktop.data import images

            handle = self._model(project, job)
            if job.cancelled():
                return None
            job.set_message("reading the image")
            image = images.load_image_array(session.image_path)
            job.set_message("generating candidate masks")

            def progress(done: int, total: int) -> None:
                if job.cancelled():
                    raise _Cancelled
                job.set_progress(done, total)

            try:
                found = candidates.generate_candidates(
                    handle, image, cand_params, progress=progress
                )
            except _Cancelled:
                return None
            if job.cancelled():
                return None
            with session.lock:
                # New candidates replace old unassigned ones; saved, refined and labelled stay.
                session.masks = [
                    m
                    for m in session.masks
                    if m.source != "candidate" or m.id is not None or m.index in kept
                ]
                for cand in found:
                    session.add(
                        cand.mask,
                        predicted_iou=_float(getattr(cand, "predicted_iou", None)),
                        stability_score=_float(getattr(cand, "stability_score", None)),
                        id=None,
                        source="candidate",
                    )
            job.set_message(f"{len(found)} candidate masks")
            self._trim_sessions()
            return self._frame_dict(session)

        job = self._jobs.start(
            "candidates",
            work,
            exclusive=MODEL_JOB,
            attrs={"project_id": str(project_id), "pk": session.pk},
        )
        return {"job_id": job.id}

    @_exposed
    def refine_mask(self, project_id: str, pk: str, prompt: dict[str, Any]) -> dict[str, Any]:
        """One new mask from positive/negative clicks and/or a box (full-image pixel coordinates)."""

        session = self._session(project_id, pk, create=False)
        project = self._project(project_id)
        prompt = prompt or {}
        points = [[float(x), float(y)] for x, y in (prompt.get("points") or [])]
        labels = [int(v) for v in (prompt.get("labels") or [])]
        if len(labels) != len(points):
            raise UserError("Each refine point needs a label (1 = include, 0 = exclude).")
        box = prompt.get("box")
        if box is not None:
            if len(box) != 4:
                raise UserError("A refine box is [x0, y0, x1, y1].")
            box = [float(v) for v in box]
        base_index = prompt.get("base_index")
        base = session.get(base_index) if base_index is not None else None
        if not points and box is None:
            raise UserError("Click on the image (or draw a box) to refine a mask.")
        from sst_desktop.engine import checkpoints
        from sst_desktop.errors import CheckpointError

        spec = project.spec
        if checkpoints.find_checkpoint(spec.sam2, explicit=spec.checkpoint) is None:
            # A refine click must not start a silent multi-hundred-MB download.
            raise CheckpointError(
                f"SAM2 model {spec.sam2} is not downloaded yet: generate candidates first (it "
                "downloads the model with progress) or choose a checkpoint file in the project's "
                "Settings… (on its groups screen)."
            )
        handle = self._model(project)
        refiner = self._refiner(handle)
        key = (session.project_id, session.pk, str(session.image_path))
        if not refiner.has_image(key):
            refiner.set_image(key, _load_array(session.image_path))
        mask_input = None
        if base is not None:
            # A refined base carries SAM's own logits (better than re-deriving them from pixels).
            mask_input = (
                base.logits if base.logits is not None else base.full(session.height, session.width)
            )
        result = refiner.predict(
            key,
            points=points or None,
            labels=labels or None,
            box=box,
            mask_input=mask_input,
        )
        mask, score = result.mask, result.score
        wm = session.add(
            mask,
            predicted_iou=_float(score),
            stability_score=None,
            id=base.id if base is not None else None,
            source="refined",
        )
        wm.base_index = base.index if base is not None else None
        wm.logits = result.low_res_logits
        session.keep_latest_logits(MAX_REFINE_LOGITS)
        self._trim_sessions()
        return self._mask_entry(session, wm)

    @_exposed
    def masks_at(self, project_id: str, pk: str, x: float, y: float) -> dict[str, Any]:
        """Indices of the working masks covering image pixel (x, y), smallest first."""
        session = self._session(project_id, pk, create=False)
        with session.lock:
            hits = [m for m in session.masks if m.contains(float(x), float(y))]
        hits.sort(key=lambda m: m.area)
        return {"indices": [m.index for m in hits]}

    @_exposed
    def save_reference(
        self, project_id: str, pk: str, assignments: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Compose the ID mask from [{index, id}] (later ones paint over earlier) and write it."""
        import numpy as np

        from sst_desktop.data import masks

        session = self._session(project_id, pk, create=False)
        project = self._project(project_id)
        if not assignments:
            raise UserError(
                f"Nothing to save for {pk!r}: give at least one mask an ID (or delete the reference)."
            )
        ids_mask = np.zeros((session.height, session.width), dtype=np.uint8)
        chosen: list[tuple[WorkingMask, int]] = []
        for item in assignments:
            wm = session.get(item.get("index"))
            object_id = _int_arg(item.get("id"), f"ID of mask {wm.index}", 1, 255)
            chosen.append((wm, object_id))
        for wm, object_id in chosen:
            h, w = wm.crop.shape
            region = ids_mask[wm.y0 : wm.y0 + h, wm.x0 : wm.x0 + w]
            region[wm.crop] = object_id
        path = Path(project.ref_mask_path(session.pk))
        masks.write_mask(path, ids_mask)
        written = masks.object_ids(ids_mask)
        with session.lock:
            assigned = {wm.index: object_id for wm, object_id in chosen}
            for wm in session.masks:
                wm.id = assigned.get(wm.index)
        return {"ok": True, "path": str(path), "ids": written}

    @_exposed
    def delete_reference(self, project_id: str, pk: str) -> dict[str, Any]:
        """Delete a frame's reference mask (its image becomes a target again)."""
        path = Path(self._mask_path(project_id, "ref", pk))
        existed = path.is_file()
        if existed:
            path.unlink()
        with self._lock:
            session = self._sessions.get((str(project_id), str(pk)))
        if session is not None:
            with session.lock:
                session.masks = [m for m in session.masks if m.source != "saved"]
                for m in session.masks:
                    m.id = None
        return {"ok": True, "deleted": existed}

    @_exposed
    def use_as_reference(self, project_id: str, pk: str) -> dict[str, Any]:
        """Copy a (corrected) prediction into ref_masks/ so it conditions the next run."""
        from sst_desktop.data import images, masks

        pred = self._mask_path(project_id, "pred", pk)
        if not pred.is_file():
            raise UserError(f"{pk!r} has no prediction yet: run propagation first.")
        size = images.image_size(self._frame_image_path(project_id, pk))
        mask = masks.read_mask(pred, expected_size=size)
        if not mask.any():
            raise UserError(f"The prediction of {pk!r} is empty; label this image instead.")
        ref = self._mask_path(project_id, "ref", pk)
        masks.write_mask(ref, mask)
        self._drop_session(project_id, pk)
        return {"ok": True, "path": str(ref)}

    @_exposed
    def start_run(
        self, project_id: str, group_keys: list[str] | None = None, options: dict | None = None
    ) -> dict[str, Any]:
        """Propagate references to targets of some (None = all) groups in a background job."""
        from sst_desktop.run import runner

        project = self._project(project_id)
        options = options or {}
        unknown = set(options) - {"batch_size", "overwrite", "max_frames", "device"}
        if unknown:
            raise UserError(f"Unknown run option(s): {', '.join(sorted(unknown))}.")
        max_frames = options.get("max_frames")
        run_options = runner.RunOptions(
            batch_size=_int_arg(options.get("batch_size", 1), "Batch size", 1, 256),
            max_frames=_int_arg(max_frames, "Max frames", 1)
            if max_frames not in (None, "")
            else None,
            overwrite=bool(options.get("overwrite", False)),
            groups=[str(k) for k in group_keys] if group_keys else None,
            device=options.get("device") or None,
        )

        def work(job: Job) -> dict[str, Any]:
            job.set_message("planning the run")

            def on_event(event: dict[str, Any]) -> None:
                _apply_run_event(job, event)

            summary = runner.run_inference(project, run_options, on_event, job.cancel)
            return summary.to_dict() if hasattr(summary, "to_dict") else summary

        with self._lock:  # a double click must not start two runs of one project
            for job in self._jobs.jobs(kind="run", running_only=True):
                if getattr(job, "project_id", None) == str(project_id):
                    raise UserError("A run of this project is already going: wait or cancel it.")
            job = self._jobs.start(
                "run", work, exclusive=MODEL_JOB, attrs={"project_id": str(project_id)}
            )
        return {"job_id": job.id}

    @_exposed
    def job_status(self, job_id: str) -> dict[str, Any]:
        """State, progress, rate, ETA, last log lines, result or error of a job."""
        return self._jobs.get(job_id).to_dict()

    @_exposed
    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop (a run finishes its current batch, then saves its summary)."""
        return {"ok": True, "was_running": self._jobs.cancel(job_id)}

    @_exposed
    def list_jobs(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Running jobs (optionally of one project), so a reopened screen can reattach."""
        jobs = self._jobs.jobs(running_only=True)
        if project_id is not None:
            jobs = [j for j in jobs if getattr(j, "project_id", None) == str(project_id)]
        return [
            j.to_dict(log_lines=0) | {"project_id": getattr(j, "project_id", None)} for j in jobs
        ]


# ---------------------------------------------------------------------- module helpers
# How far a `group_changes` cursor (microseconds: exact in a JS number) reaches back before its scan.
CHANGE_MARGIN_US = 2_000_000


def _mask_files_since(folder: Path, since: int) -> set[str]:
    """Names of the mask PNGs in `folder` modified at or after `since` (ns): one listing."""
    names = set()
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if not e.name.endswith(".png") or e.name.startswith("."):
                    continue
                try:
                    if e.stat().st_mtime_ns >= since:
                        names.add(e.name)
                except OSError:  # removed while listing
                    continue
    except OSError:  # no masks yet
        pass
    return names


def _apply_run_event(job: Job, event: dict[str, Any]) -> None:
    """Turn a runner event into job progress, message and log lines."""
    kind = event.get("type")
    if kind == "run_start":
        job.set_progress(0, event.get("targets", 0))
        job.set_message(
            f"{event.get('targets', 0)} images to predict in {event.get('groups', 0)} groups"
            + (f" ({event['skipped']} already done)" if event.get("skipped") else "")
        )
    elif kind == "model_load":
        job.set_message(f"loading SAM2 {event.get('variant', '')} on {event.get('device', '')}")
    elif kind == "progress":
        job.set_progress(event.get("done", 0), event.get("total"))
    elif kind == "frame":
        if event.get("status") == "failed":
            job.add_log(f"{event.get('pk')}: failed: {event.get('reason')}")
        elif event.get("flags"):
            job.add_log(f"{event.get('pk')}: written, review: {'; '.join(event['flags'])}")
        job.message = f"{event.get('pk')} {event.get('status')}"
    elif kind == "group_start":
        job.set_message(f"group {event.get('label', event.get('key', ''))}")
    elif kind == "group_skipped":
        job.add_log(f"group {event.get('label')}: skipped: {event.get('reason')}")
    elif kind == "run_end":
        summary = event.get("summary") or {}
        job.set_message(
            f"done: {summary.get('written', 0)} written, {len(summary.get('failed', []))} failed"
            + (", cancelled" if summary.get("cancelled") else "")
        )
    elif kind == "log" or "message" in event:
        job.add_log(str(event.get("message", event)))


def _mask_names(folder: Path) -> set[str]:
    """Mask file names in `folder` (one directory listing, no per-frame stat)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    return {n for n in names if n.endswith(".png") and not n.startswith(".")}


def _str_list(value: Any) -> list[str]:
    """A list of column names from a list or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value if str(v).strip()]


def _settings_error(config: dict[str, Any]) -> str | None:
    """The first problem with the model/device/mask-mode/image-size choices, if any."""
    from sst_desktop.data import spec as spec_mod
    from sst_desktop.engine import models

    try:
        if config.get("sam2"):
            models.resolve_variant(config["sam2"])
    except UserError as exc:
        return str(exc)
    if config.get("device") and config["device"] not in spec_mod.DEVICES:
        return f"Device {config['device']!r} is not one of {', '.join(spec_mod.DEVICES)}."
    if config.get("mask_mode") and config["mask_mode"] not in spec_mod.MASK_MODES:
        return f"Mask mode {config['mask_mode']!r} is not one of {', '.join(spec_mod.MASK_MODES)}."
    size = config.get("image_size")
    if size is not None:
        try:
            size = int(size)
        except (TypeError, ValueError):
            return f"Image size {size!r} is not a number."
        lo, hi, step = spec_mod.IMAGE_SIZE_MIN, spec_mod.IMAGE_SIZE_MAX, spec_mod.IMAGE_SIZE_STEP
        if not lo <= size <= hi or size % step:
            return f"Image size {size} must be a multiple of {step} from {lo} to {hi}."
    return None


def _settings_dict(spec: Any) -> dict[str, Any]:
    """The editable settings of a spec, JSON-able (the settings dialog's fields)."""
    return {
        "name": spec.display_name,
        "sam2": spec.sam2,
        "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
        "device": spec.device,
        "image_size": spec.image_size,
        "mask_mode": spec.mask_mode,
        "spec_path": str(spec.spec_path) if spec.spec_path else None,
    }


def _same_path(a: Any, b: Any) -> bool:
    if not a or not b:
        return False
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _first(chosen: Any) -> str | None:
    if not chosen:
        return None
    if isinstance(chosen, (list, tuple)):
        return str(chosen[0]) if chosen else None
    return str(chosen)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else round(float(value), 4)
    except (TypeError, ValueError):
        return None


def _data_dir() -> Path:
    from sst_desktop import paths

    return paths.data_dir()


def _load_array(path: Path) -> Any:
    from sst_desktop.data import images

    return images.load_image_array(path)


def _device_choices() -> list[str]:
    """Devices to offer without importing torch (the window must not wait for it)."""
    torch_loaded = "torch" in sys.modules
    if torch_loaded:
        try:
            from sst_desktop.engine import sam2_model

            return sam2_model.available_devices()
        except Exception:
            pass
    devices = ["auto"]
    if os.path.exists("/proc/driver/nvidia") or sys.platform == "win32":
        devices.append("cuda")
    if sys.platform == "darwin":
        devices.append("mps")
    devices.append("cpu")
    return devices


def _candidate_defaults() -> dict[str, Any]:
    from dataclasses import asdict

    try:
        from sst_desktop.engine import candidates

        params = candidates.CandidateParams()
    except Exception as exc:  # candidates.py not importable: the UI still starts
        log.warning("candidate defaults unavailable: %s", describe_error(exc))
        return {}
    return _plain(params.to_dict()) if hasattr(params, "to_dict") else _plain(asdict(params))


def _clean_config(config: dict[str, Any]) -> dict[str, Any]:
    """The new-project form's dict with blank strings turned into None."""
    if not isinstance(config, dict):
        raise UserError("The project configuration must be an object.")
    return {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in config.items()}
