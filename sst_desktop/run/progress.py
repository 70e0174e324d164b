"""Terminal progress for runs: a tqdm bar on a TTY, plain lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from sst_desktop.console import fit_to_terminal, terminal_bar
from sst_desktop.engine.checkpoints import terminal_progress
from sst_desktop.run.events import Progress, RunEvent

MAX_BAR_WIDTH = 30  # characters of the bar itself; `format_progress`'s text follows it


def format_duration(seconds: float | None) -> str:
    """`h:mm:ss` (or `m:ss`) for a number of seconds; `?` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate(done: int, left: int, elapsed: float) -> tuple[float | None, float | None]:
    """(units per second, seconds left) after `done` units in `elapsed` s; None while unknown."""
    if elapsed <= 0 or done <= 0:
        return None, None
    ips = done / elapsed
    return ips, left / ips


def format_event(event: RunEvent) -> str | None:
    """One human-readable log line for an event, or None for events not worth a line."""
    kind = event.get("type")
    if kind == "run_start":
        return (
            f"Run: {event['targets']} image(s) to predict in {event['groups']} group(s) "
            f"({event['skipped']} already predicted)"
        )
    if kind == "model_load":
        return f"Loading SAM2 {event['variant']} on {event['device']}..."
    if kind == "group_start":
        return (
            f"Group {_group_name(event)}: {event['references']} reference(s), "
            f"{event['targets']} to predict"
        )
    if kind == "group_skipped":
        return f"Group {_group_name(event)} skipped: {event['reason']}"
    if kind == "frame" and event.get("status") == "failed":
        return f"Failed {event['pk']}: {event['reason']}"
    if kind == "progress":
        return format_progress(event)
    if kind == "run_end":
        return "Cancelled." if event["summary"].get("cancelled") else "Done."
    return None


def _group_name(event: RunEvent) -> str:
    """The group as the screens name it (its values), else its Column=value label."""
    return event.get("title") or event["label"]


def format_progress(event: Progress) -> str:
    """`12/100 (12%)  3.20 img/s  ETA 0:27` from a progress event."""
    done, total = event["done"], event["total"]
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    ips = event.get("ips")
    speed = f"{ips:.2f} img/s" if ips else "-- img/s"
    return f"{done}/{total}{pct}  {speed}  ETA {format_duration(event.get('eta_s'))}"


def format_summary(summary: dict[str, Any]) -> str:
    """The final multi-line summary printed after a run."""
    lines = [
        "Summary" + (" (cancelled)" if summary.get("cancelled") else ""),
        f"  written:   {summary['written']}",
        f"  skipped:   {summary['skipped']} (prediction already there)",
        f"  failed:    {len(summary['failed'])}",
    ]
    busy = summary.get("busy") or []
    if busy:
        # Frames another run of the project held: not predicted here, not failed either.
        lines.insert(3, f"  left to another run: {len(busy)} (held by {busy[0]['by']})")
    lines += [f"    {item['pk']}: {item['reason']}" for item in summary["failed"]]
    no_refs = summary["groups_without_references"]
    lines.append(f"  groups without references: {len(no_refs)}")
    lines += [f"    {label}" for label in no_refs]
    others = [g for g in summary.get("groups_skipped", []) if g["label"] not in no_refs]
    if others:
        lines.append(f"  groups stopped by an error: {len(others)}")
        lines += [f"    {g['label']}: {g['reason']}" for g in others]
    lines.append(f"  flagged for review: {len(summary['flagged'])}")
    lines += [f"    {item['pk']}: {'; '.join(item['reasons'])}" for item in summary["flagged"]]
    lines.append(
        f"  elapsed:   {format_duration(summary['elapsed_s'])}"
        f"  ({summary['images_per_s']:.2f} images/s)"
    )
    if summary.get("error"):
        lines.append(f"  stopped by: {summary['error']}")
    if summary.get("summary_path"):
        lines.append(f"  saved:     {summary['summary_path']}")
    return "\n".join(lines)


def _bar_format(width: int) -> str:
    """tqdm's format for a bar of `width` characters (at least 10) followed by the text."""
    return f"[{{bar:{max(10, width)}}}] {{desc}}"


class ProgressReporter:
    """Consumes runner events and prints them; `mode` is auto, bar, lines or quiet."""

    def __init__(
        self,
        stream: TextIO | None = None,
        mode: str = "auto",
        every_s: float = 10.0,
        every_frames: int = 100,
        summary_stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.summary_stream = summary_stream if summary_stream is not None else sys.stdout
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        if mode not in ("bar", "lines", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.every_s = every_s
        self.every_frames = every_frames
        self._bar: tqdm | None = None
        # Counted from now, not from the clock's origin (boot), so the first line is throttled too.
        self._last_line_time = time.monotonic()
        self._last_line_done = 0
        self._last_progress: dict[str, Any] | None = None
        self._download_report: Callable[[int, int | None], None] | None = None

    def __call__(self, event: RunEvent) -> None:
        if self.mode == "quiet":
            return
        kind = event.get("type")
        if kind == "progress":
            self._progress(event)
        elif kind == "download":
            self._download(event)
        elif kind == "run_end":
            self._close_bar()
            self.summary_stream.write(format_summary(event["summary"]) + "\n")
            self.summary_stream.flush()
        else:
            line = format_event(event)
            if line:
                self._line(line)

    def _download(self, event: dict[str, Any]) -> None:
        """Checkpoint download progress: the same bar or per-10 % lines as the model download."""
        if self._download_report is None:
            self._clear_bar()
            self._download_report = terminal_progress("Downloading SAM2 checkpoint", self.stream)
        self._download_report(event["done"], event.get("total"))

    def _line(self, text: str) -> None:
        self._clear_bar()
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.mode == "bar" and self._last_progress is not None:
            self._draw_bar(self._last_progress)

    def _progress(self, event: dict[str, Any]) -> None:
        self._last_progress = event
        if self.mode == "bar":
            self._draw_bar(event)
            return
        now = time.monotonic()
        done = event["done"]
        finished = done >= event["total"]
        due = (
            now - self._last_line_time >= self.every_s
            or done - self._last_line_done >= self.every_frames
        )
        if (due or finished) and done != self._last_line_done:
            self._last_line_time, self._last_line_done = now, done
            self._line(format_progress(event))

    def _draw_bar(self, event: Progress) -> None:
        text = format_progress(event)
        if self._bar is None:
            # leave=False: the bar is cleared at the end; the summary follows on its own lines.
            self._bar = terminal_bar(
                self.stream,
                total=event["total"],
                bar_format=_bar_format(MAX_BAR_WIDTH),
                ascii=" #",
                mininterval=0,
                leave=False,
            )
        bar = self._bar
        fit_to_terminal(bar, self.stream)
        # The text is what matters: on a narrow terminal the bar shrinks first.
        bar.bar_format = _bar_format(min(MAX_BAR_WIDTH, bar.ncols - len(text) - 3))
        bar.total = event["total"]
        bar.n = event["done"]
        bar.set_description_str(text, refresh=False)
        bar.refresh()

    def _clear_bar(self) -> None:
        if self._bar is not None:
            self._bar.clear()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
