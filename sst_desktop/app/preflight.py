"""Before the window opens: check, in a child process, that Qt can start on this display.

Qt aborts the whole process (SIGABRT) when its platform plugin cannot load (a missing system
library such as libxcb-cursor0) or the display does not answer. A short-lived child process takes
that abort instead, and its messages say which library or display is at fault, so the app can
name the cause and the fix in one line and serve itself to a browser instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

# Set in the child: `sst-desktop` (also a frozen bundle, which has no `-c`) runs the check only.
PROBE_ENV = "SST_DESKTOP_WINDOW_PROBE"
PROBE_OK = "sst-window-probe-ok"
PROBE_TIMEOUT_S = 20.0

# Debian/Ubuntu package of a library whose name does not follow the soname rule below.
PACKAGE_OVERRIDES = {
    "libnss3.so": "libnss3",
    "libnssutil3.so": "libnss3",
    "libsmime3.so": "libnss3",
    "libnspr4.so": "libnspr4",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libdbus-1.so.3": "libdbus-1-3",
}

# Qt (with QT_DEBUG_PLUGINS=1) or the dynamic loader naming the library that failed to load.
_LIBRARY_RE = re.compile(
    r"(lib[\w.+-]+?\.so(?:\.\d+)*): (cannot open shared object file|file too short"
    r"|invalid ELF header|wrong ELF class[^\"\n]*|[^\"\n]*?version[^\"\n]*)"
)
_DISPLAY_RE = re.compile(r"could not connect to display ?(\S*)")
_WAYLAND_RE = re.compile(
    r"Failed to create wl_display|wayland.*(?:could not|failed to) connect", re.I
)


@dataclass(frozen=True)
class WindowCheck:
    """Whether the window can open; if not, `cause` is one line naming the cause and the fix."""

    ok: bool
    cause: str = ""
    package: str | None = None


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships a library: libxcb-cursor.so.0 -> libxcb-cursor0."""
    if soname in PACKAGE_OVERRIDES:
        return PACKAGE_OVERRIDES[soname]
    match = re.fullmatch(r"(lib[\w.+-]+?)\.so\.(\d+)(?:\.\d+)*", soname)
    if not match:
        return soname.split(".so", 1)[0].lower()
    name, major = match.group(1).lower(), match.group(2)
    # Debian policy: the version follows the name, with a hyphen when the name ends in a digit.
    return f"{name}-{major}" if name[-1].isdigit() else f"{name}{major}"


def diagnose(output: str, display: str | None = None) -> WindowCheck:
    """Turn the failed child's messages into one line naming the cause and the fix."""
    shown = display or os.environ.get("DISPLAY") or ""
    match = _DISPLAY_RE.search(output)
    if match:
        where = match.group(1) or shown or "(unset)"
        return WindowCheck(
            ok=False,
            cause=(
                f"the display {where} does not answer (no X server behind DISPLAY={where}): "
                "start one, fix DISPLAY (over ssh, connect with `ssh -X`), or unset it"
            ),
        )
    match = _LIBRARY_RE.search(output)
    if match:
        soname, reason = match.group(1), match.group(2).strip()
        package = debian_package(soname)
        state = "is missing" if "cannot open" in reason else f"cannot be loaded ({reason})"
        return WindowCheck(
            ok=False,
            cause=(
                f"the window's system library {soname} {state}: install it with "
                f"`sudo apt install {package}`"
            ),
            package=package,
        )
    if _WAYLAND_RE.search(output):
        wayland = os.environ.get("WAYLAND_DISPLAY", "")
        return WindowCheck(
            ok=False,
            cause=f"the Wayland display {wayland} does not answer: check WAYLAND_DISPLAY, or unset it",
        )
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    return WindowCheck(
        ok=False,
        cause=(
            f"the window's toolkit (Qt) cannot start here ({last or 'no message'}): "
            "run `bash packaging/install.sh` as root to install its system libraries"
        ),
    )


def _probe_command() -> list[str]:
    """The child's command line: this interpreter (or the frozen app) in probe mode."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "sst_desktop.app.preflight"]


def _no_core_dump() -> None:  # runs in the child before exec
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError):
        pass


def check_window(timeout: float = PROBE_TIMEOUT_S) -> WindowCheck:
    """Start Qt with the window's platform plugin in a child process; report whether it worked."""
    if not sys.platform.startswith("linux"):
        return WindowCheck(ok=True)  # Windows and macOS use their own web view, no plugin to miss
    env = dict(os.environ)
    env[PROBE_ENV] = "1"
    env["QT_DEBUG_PLUGINS"] = "1"  # makes Qt name the library its plugin failed to load
    env.setdefault("QT_API", "pyqt6")
    try:
        proc = subprocess.run(
            _probe_command(),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            preexec_fn=_no_core_dump,
        )
    except subprocess.TimeoutExpired:
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "(unset)"
        return WindowCheck(
            ok=False,
            cause=(
                f"the display {display} did not answer within {timeout:.0f} s: "
                "check DISPLAY (over ssh, connect with `ssh -X`), or unset it"
            ),
        )
    except OSError as exc:
        return WindowCheck(ok=False, cause=f"cannot start the window check ({exc})")
    if proc.returncode == 0 and PROBE_OK in proc.stdout:
        return WindowCheck(ok=True)
    return diagnose(proc.stderr + "\n" + proc.stdout)


def child_main() -> int:
    """In the child: load what the window loads, open the display, exit (Qt aborts on failure)."""
    try:
        # QtWebEngine first: PyQt6 wants it imported before the application object exists.
        import PyQt6.QtWebEngineCore  # noqa: F401  (fails here when e.g. libnss3 is missing)
        from PyQt6.QtGui import QGuiApplication
    except ImportError as exc:
        print(f"import failed: {exc}", file=sys.stderr, flush=True)
        return 3
    app = QGuiApplication(
        [sys.argv[0] or "sst-desktop"]
    )  # Qt picks the platform, as the window's does
    print(f"{PROBE_OK} {app.platformName()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
