"""Progress reporter: bar on a TTY, throttled lines otherwise, silence when quiet, final summary."""

from __future__ import annotations

import io

from sst_desktop.run.progress import ProgressReporter, format_duration, format_summary


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
