"""`sst-desktop` where the window cannot start: one line naming the cause and the fix, then the app
served to a browser (URL first on stdout), never a Qt abort. Real Qt, a real X server (Xvfb)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sst_desktop.app import preflight
from tests._browser_helpers import stop_process

REPO = Path(__file__).resolve().parents[1]
XVFB = shutil.which("Xvfb")


def _free_display_number() -> int:
    """A display number with no X server (no socket, no lock file)."""
    for n in range(150, 400):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free display number")


@pytest.fixture
def xvfb():
    """A real X server on a free display number; yields its DISPLAY, stopped by PID afterwards."""
    if XVFB is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        proc.wait()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


class Launch:
    """`python -m sst_desktop` with no arguments (the README's first command), in a subprocess."""

    def __init__(self, env: dict[str, str], timeout: float = 90.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sst_desktop"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(REPO),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            self.first_line = lines.get(timeout=timeout).strip()
        except queue.Empty:
            self.first_line = ""

    def stop(self) -> str:
        """Stop it by its PID; return its stderr."""
        return stop_process(self.proc)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The launch's environment; $BROWSER is a script that records the URL it is asked to open."""
    env = dict(os.environ)
    for name in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "LD_LIBRARY_PATH"):
        env.pop(name, None)
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {tmp_path / "opened.txt"}\n')
    browser.chmod(0o755)
    env["BROWSER"] = str(browser)
    env.update(extra)
    return env


def _opened(tmp_path: Path, url: str) -> None:
    """Wait until the recording browser got `url` (the server opens it from a thread)."""
    record = tmp_path / "opened.txt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (record.is_file() and record.read_text().strip()):
        time.sleep(0.1)
    assert record.is_file(), "the default browser was not asked to open the URL"
    assert record.read_text().split() == [url]


def _served(launch: Launch) -> tuple[int, str]:
    """(HTTP status of the printed URL, stderr) once the server has been asked and stopped."""
    try:
        assert launch.first_line.startswith("http://127.0.0.1:"), (
            f"first stdout line {launch.first_line!r}; exit {launch.proc.poll()}"
        )
        assert "token=" in launch.first_line
        with urllib.request.urlopen(launch.first_line, timeout=30) as response:
            status = response.status
            body = response.read().decode("utf-8")
        assert "SST Desktop" in body
    finally:
        err = launch.stop()
    return status, err


def _one_cause_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "the window cannot open" in ln]
    assert len(lines) == 1, stderr
    assert "Aborted" not in stderr and "core dumped" not in stderr, stderr
    return lines[0]


@pytest.mark.gui
def test_missing_xcb_cursor_library_falls_back_to_the_browser(tmp_path, xvfb):
    # An empty libxcb-cursor.so.0 first on the library path: what Qt meets on a machine
    # without libxcb-cursor0 (the loader finds no usable library).
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libxcb-cursor.so.0").write_bytes(b"")
    launch = Launch(_env(tmp_path, DISPLAY=xvfb, LD_LIBRARY_PATH=str(libs)))
    _opened(tmp_path, launch.first_line)
    status, err = _served(launch)
    assert status == 200
    line = _one_cause_line(err)
    assert "libxcb-cursor.so.0" in line and "sudo apt install libxcb-cursor0" in line, line
    assert "web browser" in line


@pytest.mark.gui
def test_display_without_a_server_falls_back_to_the_browser(tmp_path):
    display = f":{_free_display_number()}"
    launch = Launch(_env(tmp_path, DISPLAY=display))
    _opened(tmp_path, launch.first_line)
    status, err = _served(launch)
    assert status == 200
    line = _one_cause_line(err)
    assert f"the display {display} does not answer" in line, line


@pytest.mark.gui
def test_the_check_passes_where_the_window_can_open(xvfb, monkeypatch):
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert preflight.check_window() == preflight.WindowCheck(ok=True)


@pytest.mark.parametrize(
    ("soname", "package"),
    [
        ("libxcb-cursor.so.0", "libxcb-cursor0"),
        ("libxcb-icccm.so.4", "libxcb-icccm4"),
        ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
        ("libxcb-render-util.so.0", "libxcb-render-util0"),
        ("libnss3.so", "libnss3"),
        ("libEGL.so.1", "libegl1"),
    ],
)
def test_library_names_map_to_debian_packages(soname, package):
    assert preflight.debian_package(soname) == package
