"""Driving the real window from a probe thread (`run_app(_probe=...)`): the window tests and the
bundle's self-test ask the page the same questions through these helpers."""

from __future__ import annotations

import json
import time
from typing import Any

BRIDGE_READY = (
    "(window.pywebview && window.pywebview.api && typeof window.pywebview.api.app_info) || ''"
)


def wait_js(window: Any, expression: str, timeout: float = 60, poll_s: float = 0.1) -> Any:
    """Evaluate `expression` in the page until it is truthy or `timeout` seconds pass; its last
    value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = window.evaluate_js(expression)
        if value not in (None, "", False):
            return value
        time.sleep(poll_s)
    return value


def call_api(window: Any, name: str, *args: Any, timeout: float = 60) -> dict[str, Any] | None:
    """Call `window.pywebview.api.<name>(*args)` from the page: {"result": ...} or {"error": text};
    None when no answer came within `timeout`."""
    slot = f"window.__probe_{name}"
    window.evaluate_js(
        f"{slot} = null; window.pywebview.api.{name}(...{json.dumps(list(args))}).then("
        f"r => {{ {slot} = {{result: r === undefined ? null : r}}; }},"
        f" e => {{ {slot} = {{error: (e && e.message) || String(e)}}; }}); null"
    )
    return wait_js(window, slot, timeout)
