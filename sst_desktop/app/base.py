"""The state every screen's API shares (projects, labelling sessions, jobs, the window) and the
app's lifecycle: first-launch setup, the native window, shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sst_desktop.app.media import ProjectStore
from sst_desktop.app.sessions import LabelSession, LabelSessions
from sst_desktop.data import registry
from sst_desktop.data import spec as spec_mod
from sst_desktop.data.project import Project
from sst_desktop.errors import describe_error
from sst_desktop.run.jobs import Job, JobManager

log = logging.getLogger(__name__)

MODEL_JOB = "model"  # jobs that use SAM2 run one at a time
SAMPLE_WAIT_S = 20  # how long a first call waits for the sample project being created


@dataclass
class AppServices:
    """What the JS API and the server share: the same open projects and labelling sessions."""

    store: ProjectStore = field(default_factory=ProjectStore)
    jobs: JobManager = field(default_factory=JobManager)
    sessions: LabelSessions = field(init=False)
    window: Any = None  # the pywebview window, for native file dialogs
    refiners: dict[int, Any] = field(default_factory=dict)  # by id() of the model handle in use
    lock: threading.RLock = field(default_factory=threading.RLock)
    sample_done: threading.Event = field(default_factory=threading.Event)
    setup_started: bool = False
    # The sample project this launch created, until the UI claims it (it opens it once).
    startup_project_id: str | None = None
    startup_claimed: bool = False

    def __post_init__(self) -> None:
        self.sessions = LabelSessions(self.store)

    def attach_window(self, window: Any) -> None:
        """The pywebview window the native file dialogs open on."""
        self.window = window

    def start_background_setup(
        self, warm_up: bool = True, wait_for: Callable[[], Any] | None = None
    ) -> None:
        """Create the sample project on first launch, then import torch/sam2 ahead of need.

        `wait_for` (e.g. "the window is shown") runs first in the thread; the setup counts as
        started at once, so UI calls made meanwhile wait for the sample instead of missing it.
        """
        with self.lock:
            if self.setup_started:
                return
            self.setup_started = True
        threading.Thread(
            target=self._background_setup, args=(warm_up, wait_for), name="setup", daemon=True
        ).start()

    def wait_for_setup(self) -> None:
        """On first launch the sample project is being created: wait a little for it."""
        if self.setup_started:
            self.sample_done.wait(timeout=SAMPLE_WAIT_S)

    def shutdown(self) -> None:
        """Ask every running job to stop (the window closed or the server stopped)."""
        for job in self.jobs.jobs(running_only=True):
            job.cancel.set()

    def project_jobs(self, project_id: Any, kind: str | None = None) -> list[Job]:
        """The running jobs of a project."""
        jobs = self.jobs.jobs(kind=kind, running_only=True)
        return [j for j in jobs if getattr(j, "project_id", None) == str(project_id)]

    def forget_project(self, project_id: Any) -> None:
        """Drop a project's open copy and its labelling sessions."""
        self.store.forget(project_id)
        self.sessions.drop_project(project_id)

    def _background_setup(self, warm_up: bool, wait_for: Callable[[], Any] | None) -> None:
        try:
            if wait_for is not None:
                try:
                    wait_for()
                except Exception as exc:  # a failed wait must not cost the sample project
                    log.warning("setup wait failed: %s", describe_error(exc))
            self._ensure_sample()
        finally:
            self.sample_done.set()
        try:
            registry.finish_interrupted_deletions()
        except Exception as exc:  # leftover files must not stop the app
            log.warning("could not finish an interrupted project deletion: %s", describe_error(exc))
        if warm_up:
            t0 = time.monotonic()
            try:
                # Lazy: the point is to import torch and sam2 in the background, after start-up.
                import sam2  # noqa: F401
                import torch  # noqa: F401

                log.info("torch and sam2 imported in %.1f s", time.monotonic() - t0)
            except Exception as exc:  # the first model use reports the problem properly
                log.warning("warm-up import failed: %s", describe_error(exc))

    def _ensure_sample(self) -> None:
        try:
            entry = registry.ensure_sample_project()
            if entry is not None:
                with self.lock:
                    if not self.startup_claimed:
                        self.startup_project_id = str(entry["id"])
        except Exception as exc:  # never block the app on the sample
            log.error("could not create the sample project", exc_info=exc)


class ApiBase:
    """The shared state of the screen APIs composed into `Api`; helpers stay `_private` (only
    public methods are exposed to the UI)."""

    def __init__(self, mode: str = "window", view: list[str] | None = None) -> None:
        self._mode = mode
        self._view_paths = list(view) if view else None
        self._services = AppServices()
        self._jobs = self._services.jobs
        self._lock = self._services.lock
        self._sessions = self._services.sessions

    # -- lifecycle (the window and `--serve` call these through `services(api)`)
    def _start_background_setup(
        self, warm_up: bool = True, wait_for: Callable[[], Any] | None = None
    ) -> None:
        self._services.start_background_setup(warm_up=warm_up, wait_for=wait_for)

    def _shutdown(self) -> None:
        self._services.shutdown()

    # -- lookups
    def _project(self, project_id: Any) -> Project:
        return self._services.store.project(project_id)

    def _set_spec_field(self, project: Project, name: str, value: Any) -> None:
        """Set one spec field and save spec.json; if saving fails the old value is put back, so
        nothing is half-applied in memory."""
        spec = project.spec
        with self._lock:
            old = getattr(spec, name)
            setattr(spec, name, value)
            try:
                spec_mod.save_spec(spec, project.spec_path or spec.spec_path)
            except Exception:
                setattr(spec, name, old)
                raise

    def _mask_path(self, project_id: Any, kind: str, pk: Any) -> Path:
        return self._services.store.mask_path(project_id, kind, pk)

    def _session(self, project_id: Any, pk: Any, create: bool = True) -> LabelSession:
        return self._sessions.get(project_id, pk, create=create)

    def _drop_session(self, project_id: Any, pk: Any) -> None:
        self._sessions.drop(project_id, pk)

    def _working_mask_png(
        self, project_id: Any, pk: Any, index: int, max_side: int | None = None
    ) -> tuple[bytes, str]:
        return self._sessions.mask_png(project_id, pk, index, max_side)


def services(api: ApiBase) -> AppServices:
    """The services behind an Api: the server and the window use the same ones."""
    return api._services
