"""Smoke test of the real pywebview Qt window: it opens on the bottle URL and JS reaches Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]

# Runs in a subprocess (a hung Qt must not hang the suite): opens the app through run_app and,
# from the probe thread, drives the page the real UI loaded.
PROBE = textwrap.dedent(
    """
    import json, sys, time
    from sst_desktop.app.window import run_app
    from sst_desktop.app.window_probe import BRIDGE_READY, call_api, wait_js

    out_path = sys.argv[1]
    t_start = time.monotonic()
    AT_SHOWN = {}

    import webview

    _create = webview.create_window

    def create_window(*args, **kwargs):
        # Records which heavy modules were imported when the window appeared (they must not be).
        window = _create(*args, **kwargs)
        window.events.shown += lambda: AT_SHOWN.update(
            {name: name in sys.modules for name in ("torch", "sam2", "pandas")}
        )
        return window

    webview.create_window = create_window

    def probe(window, api):
        result = {}
        try:
            result["shown"] = window.events.shown.wait(60)
            result["shown_s"] = round(time.monotonic() - t_start, 2)
            result["imported_at_shown"] = dict(AT_SHOWN)
            result["bridge"] = wait_js(window, BRIDGE_READY)
            info = call_api(window, "app_info")["result"]
            result["app_info"] = {"mode": info["mode"], "version": info["version"], "n": len(info["palette"])}
            result["error"] = call_api(window, "list_groups", "no-such-project").get("error", "resolved")
            result["title"] = window.evaluate_js("document.title")
            result["location"] = window.evaluate_js("window.location.pathname + window.location.search")
        except Exception as exc:
            result["exception"] = repr(exc)
        finally:
            with open(out_path, "w") as f:
                json.dump(result, f)
            window.destroy()

    sys.exit(run_app(_probe=probe))
    """
)


def _command(script: Path, out: Path) -> list[str]:
    cmd = [sys.executable, str(script), str(out)]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        return ["xvfb-run", "-a", "-s", "-screen 0 1400x1000x24", *cmd]
    return cmd


def test_window_opens_and_the_js_bridge_round_trips(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = tmp_path / "probe.json"
    env = dict(os.environ)
    env.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")  # we run as root in CI containers
    env.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu")
    if not env.get("DISPLAY") and not shutil.which("xvfb-run"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    try:
        proc = subprocess.run(
            _command(script, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the Qt window did not close within 180 s:\n{exc.stderr}")
    assert out.is_file(), f"probe wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert "exception" not in result, result
    assert result["shown"] is True
    # The window shows before torch, SAM2 and pandas load (they warm up afterwards).
    assert result["imported_at_shown"] == {"torch": False, "sam2": False, "pandas": False}
    assert result["bridge"] == "function"
    assert result["app_info"]["mode"] == "window" and result["app_info"]["n"] == 256
    assert "'no-such-project' is not in the project list" in result["error"]
    assert result["title"] == "SST Desktop"
    assert "token=" in result["location"] and "mode=window" in result["location"]
    assert proc.returncode == 0, proc.stderr[-4000:]
