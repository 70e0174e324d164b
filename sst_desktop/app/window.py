"""The desktop window: the bottle server in a thread and a pywebview window (Qt on Linux) on it."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from sst_desktop.app.api import Api, services
from sst_desktop.app.server import configure_logging, start_server
from sst_desktop.data import registry

log = logging.getLogger(__name__)

WINDOW_TITLE = "SST Desktop"
WINDOW_SIZE = (1360, 900)
MIN_SIZE = (900, 600)
# The first-launch setup waits this long for the window to show (a loaded machine can take
# several seconds) before it creates the sample project regardless.
SHOWN_WAIT_S = 30


def prepare_environment() -> None:
    """Environment QtWebEngine needs; must run before Qt is imported."""
    if not sys.platform.startswith("linux"):
        return
    # Chromium inside QtWebEngine refuses to run its sandbox as root (containers, some servers).
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    # pywebview's Qt backend goes through qtpy; pin it to PyQt6, the binding we ship.
    os.environ.setdefault("QT_API", "pyqt6")


def _gui_name() -> str | None:
    """pywebview's backend: Qt on Linux, the platform default (EdgeChromium, Cocoa) elsewhere."""
    return "qt" if sys.platform.startswith("linux") else None


def run_app(
    spec_path: str | None = None,
    view: list[str] | None = None,
    *,
    _probe: Callable[[Any, Any], None] | None = None,
) -> int:
    """Open the window (returns when it is closed); `spec_path` opens that project's groups.

    `_probe(window, api)` (tests only) runs in a thread once the GUI loop has started.
    """
    started = time.monotonic()
    prepare_environment()
    configure_logging()
    api = Api(mode="window", view=view)
    fragment = ""
    if spec_path:
        entry = registry.register(spec_path)  # idempotent; a bad spec fails here, clearly
        fragment = f"#/p/{quote(str(entry['id']), safe='')}"
    elif view:
        fragment = "#/view"
    running = start_server(api)
    url = f"{running.url}&mode=window{fragment}"

    import webview  # lazy: Qt loads here, after prepare_environment (still no torch/sam2/pandas)

    window = webview.create_window(
        WINDOW_TITLE,
        url,
        js_api=api,
        width=WINDOW_SIZE[0],
        height=WINDOW_SIZE[1],
        min_size=MIN_SIZE,
        text_select=True,
    )
    app_services = services(api)
    app_services.attach_window(window)

    def on_shown() -> None:
        log.info("window shown %.2f s after start", time.monotonic() - started)

    window.events.shown += on_shown
    # Sample project + torch/sam2 warm-up, once the window has had its chance to appear. Started
    # (waiting) before the page loads, so the page's first calls wait for the sample project.
    app_services.start_background_setup(
        warm_up=True, wait_for=lambda: window.events.shown.wait(SHOWN_WAIT_S)
    )

    def after_start() -> None:
        if _probe is not None:
            _probe(window, api)

    try:
        webview.start(after_start, gui=_gui_name(), private_mode=True)
    finally:
        app_services.shutdown()
        running.stop()
    return 0


def _main() -> int:  # `python -m sst_desktop.app.window` for quick manual checks
    return run_app(spec_path=sys.argv[1] if len(sys.argv) > 1 else None)


if __name__ == "__main__":
    sys.exit(_main())
