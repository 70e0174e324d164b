"""Progress reporter: bar on a TTY, throttled lines otherwise, silence when quiet, final summary."""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys

import pytest

if sys.platform != "win32":  # pseudo-terminals are Unix
    import fcntl
    import pty
    import termios

from sst_desktop.run.progress import ProgressReporter, format_duration, format_summary

UNIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are Unix")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


SUMMARY = {
    "written": 3,
    "skipped": 1,
    "failed": [{"pk": "x7", "reason": "cannot decode"}],
    "groups_without_references": ["Dataset=none"],
    "flagged": [{"pk": "x2", "reasons": ["empty"]}],
    "elapsed_s": 75.0,
    "images_per_s": 2.5,
    "cancelled": False,
    "summary_path": "/p/runs/1.json",
}


def _events(total: int = 5):
    yield {"type": "run_start", "groups": 2, "targets": total, "skipped": 1}
    yield {
        "type": "group_start",
        "key": "k",
        "label": "Dataset=a",
        "references": 1,
        "targets": total,
        "skipped": 0,
    }
    for done in range(1, total + 1):
        if done == 3:
            yield {
                "type": "frame",
                "pk": "x7",
                "group": "k",
                "status": "failed",
                "reason": "cannot decode",
                "flags": [],
            }
        yield {
            "type": "frame",
            "pk": f"x{done}",
            "group": "k",
            "status": "written",
            "reason": None,
            "flags": [],
        }
        yield {
            "type": "progress",
            "done": done,
            "total": total,
            "ips": 2.0,
            "eta_s": (total - done) / 2,
        }
    yield {
        "type": "group_skipped",
        "key": "n",
        "label": "Dataset=none",
        "reason": "no reference masks",
    }
    yield {"type": "run_end", "summary": SUMMARY}


def test_format_duration():
    assert format_duration(None) == "?"
    assert format_duration(65) == "1:05"
    assert format_duration(3725) == "1:02:05"


def test_tty_draws_a_carriage_return_bar_and_prints_the_summary():
    err, out = _Tty(), io.StringIO()
    reporter = ProgressReporter(stream=err, summary_stream=out)
    assert reporter.mode == "bar"
    for event in _events():
        reporter(event)
    text = err.getvalue()
    assert "\r[" in text and "img/s" in text and "ETA" in text
    assert "5/5 (100%)" in text
    assert "Failed x7: cannot decode" in text
    assert "Group Dataset=none skipped: no reference masks" in text
    summary = out.getvalue()
    assert "written:   3" in summary and "x7: cannot decode" in summary
    assert "Dataset=none" in summary and "x2: empty" in summary and "1:15" in summary


def test_plain_lines_are_throttled_and_have_no_carriage_returns():
    err, out = io.StringIO(), io.StringIO()
    reporter = ProgressReporter(stream=err, summary_stream=out, every_s=3600, every_frames=2)
    assert reporter.mode == "lines"
    for event in _events(total=5):
        reporter(event)
    text = err.getvalue()
    assert "\r" not in text
    progress_lines = [line for line in text.splitlines() if "img/s" in line]
    # every 2 frames, plus the final one
    assert [line.split()[0] for line in progress_lines] == ["2/5", "4/5", "5/5"]
    assert "Group Dataset=a: 1 reference(s), 5 to predict" in text
    assert "Summary" in out.getvalue()


def test_quiet_prints_nothing():
    err, out = _Tty(), io.StringIO()
    reporter = ProgressReporter(stream=err, summary_stream=out, mode="quiet")
    for event in _events():
        reporter(event)
    assert err.getvalue() == "" and out.getvalue() == ""


def test_summary_mentions_cancel_errors_and_groups_stopped():
    assert format_summary({**SUMMARY, "cancelled": True}).startswith("Summary (cancelled)")
    skipped = [
        {"key": "n", "label": "Dataset=none", "reason": "no reference masks"},
        {"key": "c", "label": "Dataset=c", "reason": "none of its reference masks is usable"},
    ]
    text = format_summary({**SUMMARY, "groups_skipped": skipped, "error": "disk full"})
    assert "groups stopped by an error: 1\n    Dataset=c: none of its" in text
    assert "stopped by: disk full" in text


def test_download_events_print_a_line_per_ten_percent_when_piped():
    err, out = io.StringIO(), io.StringIO()
    reporter = ProgressReporter(stream=err, summary_stream=out)
    for done in range(0, 1_000_001, 50_000):
        reporter({"type": "download", "done": done, "total": 1_000_000})
    lines = [line for line in err.getvalue().splitlines() if "Downloading SAM2 checkpoint" in line]
    assert len(lines) == 11 and "100%" in lines[-1]


@contextlib.contextmanager
def _pseudo_terminal(columns: int = 0, rows: int = 0):
    """A text stream on a real pseudo-terminal (0 x 0 unless sized, as `pty.openpty` leaves it)
    and a function returning everything written to it so far."""
    master, slave = pty.openpty()
    if columns or rows:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    stream = open(slave, "w", encoding="utf-8", buffering=1, closefd=True)  # noqa: SIM115
    os.set_blocking(master, False)
    chunks: list[bytes] = []

    def written() -> str:
        stream.flush()
        with contextlib.suppress(BlockingIOError):
            while data := os.read(master, 65536):
                chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")

    try:
        yield stream, written
    finally:
        stream.close()
        os.close(master)


@UNIX_ONLY
@pytest.mark.parametrize("columns", [0, 60])
def test_the_bar_draws_on_a_real_terminal_with_or_without_a_size(columns):
    # A terminal reporting 0 x 0 (a bare pseudo-terminal) once left tqdm drawing nothing.
    out = io.StringIO()
    with _pseudo_terminal(columns=columns, rows=24 if columns else 0) as (err, written):
        assert os.get_terminal_size(err.fileno()).columns == columns
        reporter = ProgressReporter(stream=err, summary_stream=out)
        assert reporter.mode == "bar"
        for event in _events():
            reporter(event)
        text = written()
    assert "\r[###" in text and "5/5 (100%)" in text and "img/s" in text
    assert "Failed x7: cannot decode" in text
    if columns:  # every redraw fits the terminal's width, the text whole, the bar shortened
        bars = [part for part in re.split(r"[\r\n]", text) if part.startswith("[")]
        assert bars and max(len(part) for part in bars) < columns
        assert bars[-1].rstrip().endswith("5/5 (100%)  2.00 img/s  ETA 0:00")
    assert "written:   3" in out.getvalue()


@UNIX_ONLY
def test_download_bar_draws_on_a_terminal_that_reports_no_size():
    with _pseudo_terminal() as (err, written):
        reporter = ProgressReporter(stream=err, summary_stream=io.StringIO())
        for done in range(0, 1_000_001, 250_000):
            reporter({"type": "download", "done": done, "total": 1_000_000})
        text = written()
    assert "Downloading SAM2 checkpoint" in text and "100%" in text and "1.00M/1.00M" in text
