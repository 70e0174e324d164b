"""What a run reports as it goes: the summary it fills, the counts behind its progress events,
and one event per frame outcome. The group loop and the runner both report through a `RunTally`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sst_desktop import fileio
from sst_desktop.data.review import update_flags_index
from sst_desktop.run.events import EventSink, RunEvent
from sst_desktop.run.progress import rate

# Progress events are throttled so a GUI poll or a terminal is not flooded on fast GPUs.
PROGRESS_MIN_INTERVAL_S = 0.25


@dataclass
class RunSummary:
    """Outcome of a run; saved as JSON under `root/runs/`."""

    spec_path: str = ""
    started_at: str = ""
    written: int = 0
    skipped: int = 0  # targets whose prediction already existed
    busy: list[dict[str, str]] = field(default_factory=list)  # {pk, by}: another run had them
    failed: list[dict[str, str]] = field(default_factory=list)  # {pk, reason}
    groups_without_references: list[str] = field(default_factory=list)  # labels
    reference_scope: str = "group"  # "all": every group used the project's shared references
    groups_skipped: list[dict[str, str]] = field(default_factory=list)  # {key, label, reason}
    flagged: list[dict[str, Any]] = field(default_factory=list)  # {pk, reasons}
    written_pks: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    images_per_s: float = 0.0
    cancelled: bool = False
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    summary_path: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)  # per stage, see run.pipeline

    @property
    def ok(self) -> bool:
        """True when nothing failed (groups without references are not failures)."""
        return not self.failed and not self.error

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _timestamp_name(runs_dir: Path) -> Path:
    """A fresh `runs/<UTC timestamp>.json` path that sorts chronologically."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = runs_dir / f"{stamp}.json"
    n = 1
    while path.exists():
        path = runs_dir / f"{stamp}-{n}.json"
        n += 1
    return path


def save_summary(root: str | Path, summary: RunSummary) -> None:
    """Save `summary` as `root/runs/<UTC time>.json`; a failure is noted in its `error`."""
    runs_dir = Path(root) / "runs"
    try:
        path = _timestamp_name(runs_dir)
        summary.summary_path = str(path)
        fileio.atomic_write_json(path, summary.to_dict())
    except OSError as exc:
        # Disk full or read-only: the outcome still reaches the caller, with what was lost;
        # raising here would also hide the exception that may have ended the run.
        summary.summary_path = None
        note = f"could not save the run summary in {runs_dir}: {exc.strerror or exc}"
        summary.error = f"{summary.error}; {note}" if summary.error else note
    else:
        # GUI flag listings then start from runs/flags.index, not a read of every summary;
        # a failure here only costs a later rebuild.
        with contextlib.suppress(OSError):
            update_flags_index(root)


class RunTally:
    """The summary of one run, its done/total counts, and the events that report them."""

    def __init__(
        self,
        summary: RunSummary,
        on_event: EventSink | None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.summary = summary
        self.emit_fn = on_event
        self.cancel = cancel or threading.Event()
        self.done = 0
        self.total = 0
        self.rate_start: float | None = None  # set when the first group starts predicting
        self.last_progress = 0.0

    def emit(self, event: RunEvent) -> None:
        """Pass `event` to the run's listener, if any."""
        if self.emit_fn is not None:
            self.emit_fn(event)

    def start_rate(self) -> None:
        """Start the images/s clock once (model loading does not count toward it)."""
        if self.rate_start is None:
            self.rate_start = time.monotonic()

    def progress(self, force: bool = False) -> None:
        """A progress event with rate and ETA, at most every PROGRESS_MIN_INTERVAL_S unless forced."""
        now = time.monotonic()
        if not force and now - self.last_progress < PROGRESS_MIN_INTERVAL_S:
            return
        self.last_progress = now
        ips = eta = None
        if self.rate_start is not None:
            ips, eta = rate(self.done, self.total - self.done, now - self.rate_start)
        self.emit(
            {"type": "progress", "done": self.done, "total": self.total, "ips": ips, "eta_s": eta}
        )

    def frame(
        self, pk: str, group_key: str, status: str, reason: str | None, flags: list[str] = ()
    ) -> None:
        """One frame's outcome as an event (counts are the caller's)."""
        self.emit(
            {
                "type": "frame",
                "pk": str(pk),
                "group": group_key,
                "status": status,
                "reason": reason,
                "flags": list(flags),
            }
        )

    def fail(self, pk: str, reason: str, group: Any) -> None:
        """A target that could not be predicted or written: recorded, counted, reported."""
        self.summary.failed.append({"pk": str(pk), "reason": reason})
        self.done += 1
        self.frame(pk, str(group.key), "failed", reason)
        self.progress()

    def written(self, pk: str, flags: list[str], group: Any) -> None:
        """A prediction committed to disk, with its review flags."""
        self.summary.written += 1
        self.summary.written_pks.append(pk)
        if flags:
            self.summary.flagged.append({"pk": pk, "reasons": flags})
        self.done += 1
        self.frame(pk, str(group.key), "written", None, flags)
        self.progress()

    def busy(self, pk: str, owner: str, group_key: str) -> None:
        """A target another live run is predicting: skipped and counted as done for this run."""
        self.summary.busy.append({"pk": pk, "by": owner})
        self.done += 1  # counted in the total; done for this run
        self.frame(pk, group_key, "skipped", f"another run is predicting it ({owner})")

    def bad_reference(self, pk: str, reason: str, group_key: str) -> None:
        """A reference that cannot be used is reported and left out; the others still count."""
        self.summary.failed.append({"pk": pk, "reason": reason})
        # A frame event (not counted in progress: references are no targets).
        self.emit(
            {
                "type": "frame",
                "pk": pk,
                "group": group_key,
                "status": "failed",
                "reason": reason,
                "flags": [],
                "reference": True,
            }
        )

    def skip_group(
        self, key: str, label: str, reason: str, targets: list[Any] = (), title: str = ""
    ) -> None:
        """A group left out; its targets were counted in the total, so count them as done too."""
        self.summary.groups_skipped.append({"key": key, "label": label, "reason": reason})
        self.done += len(targets)  # keeps the ETA honest
        event = {"type": "group_skipped", "key": key, "label": label, "reason": reason}
        self.emit({**event, "title": title or label})
