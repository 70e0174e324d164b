"""Packaging self-check run inside the frozen app: resources, torch, SAM2's Hydra configs, Qt bridge.

The bundle runs this instead of the CLI when $SST_BUNDLE_SELFTEST names a JSON file; each check's
outcome is written there, and the exit status is 0 only if every requested check passed. It checks
what packaging can break (missing data files, libraries, Qt plugins), not the app's own logic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

CHECKS = ("resources", "torch", "sam2", "gui", "app")

# A page whose script calls the Python bridge once pywebview has injected it and keeps the answer.
_BRIDGE_PAGE = """<!doctype html><html><body><p id="out">waiting</p><script>
window.sstSelfTest = null;
window.addEventListener('pywebviewready', function () {
  window.pywebview.api.ping(41)
    .then(function (r) { window.sstSelfTest = r; document.getElementById('out').textContent = r; })
    .catch(function (e) { window.sstSelfTest = 'error: ' + e; });
});
</script></body></html>"""


def check_resources(args: argparse.Namespace) -> dict:
    """The UI and the sample dataset are where `paths.resource_dir` looks for them."""
    from sst_desktop.paths import resource_dir

    ui = resource_dir("ui")
    sample = resource_dir("sample_data")
    if not (ui / "index.html").is_file():
        raise RuntimeError(f"{ui}/index.html missing")
    return {
        "ui": str(ui),
        "sample_data": str(sample),
        "frozen": bool(getattr(sys, "frozen", False)),
    }


def check_torch(args: argparse.Namespace) -> dict:
    """torch imports and computes on CPU; reports whether CUDA is usable."""
    import torch

    x = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(2, 3, 3, 3))
    if float(x[0, 0, 0, 0]) != 27.0:
        raise RuntimeError(f"conv2d gave {float(x[0, 0, 0, 0])}, expected 27")
    return {"version": torch.__version__, "cuda_available": torch.cuda.is_available()}


def check_sam2(args: argparse.Namespace) -> dict:
    """SAM2's Hydra config composes, the model builds, loads the checkpoint and encodes an image."""
    import sam2  # noqa: F401  (initialises Hydra on sam2's config module)
    import torch
    from hydra import compose
    from hydra.utils import instantiate

    cfg = compose(config_name=args.config, overrides=[f"++model.image_size={args.image_size}"])
    model = instantiate(cfg.model, _recursive_=True)
    loaded = False
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"]
        missing, unexpected = model.load_state_dict(state)
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint mismatch: {len(missing)} missing, {len(unexpected)} extra"
            )
        loaded = True
    model.eval()
    with torch.inference_mode():
        out = model.image_encoder(torch.zeros(1, 3, args.image_size, args.image_size))
    return {"config": args.config, "checkpoint_loaded": loaded, "levels": len(out["backbone_fpn"])}


class _BridgeApi:
    """The js_api object the page calls."""

    def ping(self, value: int) -> int:
        return int(value) + 1


def check_gui(args: argparse.Namespace) -> dict:
    """A pywebview window (Qt backend) loads a page whose JS calls Python and gets the answer."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Chromium refuses to sandbox as root (containers, CI).
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    import webview

    from sst_desktop.app.window_probe import wait_js

    window = webview.create_window("SST Desktop self-test", html=_BRIDGE_PAGE, js_api=_BridgeApi())
    outcome: dict[str, object] = {"reported": None}

    def drive() -> None:
        # Poll from this side rather than have JS call back: pywebview answers every JS call from a
        # non-daemon thread that blocks forever if the window is gone, which would hang the exit.
        outcome["reported"] = wait_js(window, "window.sstSelfTest", args.gui_timeout, poll_s=0.2)
        window.destroy()

    started = time.monotonic()
    webview.start(drive, gui="qt")
    if outcome["reported"] != 42:
        raise RuntimeError(f"bridge round trip failed: JS got {outcome['reported']!r}, expected 42")
    return {"roundtrip": outcome["reported"], "seconds": round(time.monotonic() - started, 1)}


def check_app(args: argparse.Namespace) -> dict:
    """The real app window opens on its bundled UI and `app_info()` round-trips through the bridge."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from sst_desktop.app.window import run_app
    from sst_desktop.app.window_probe import BRIDGE_READY, call_api, wait_js

    outcome: dict[str, object] = {}

    def probe(window, api) -> None:
        try:
            outcome["shown"] = window.events.shown.wait(args.gui_timeout)
            outcome["bridge"] = wait_js(window, BRIDGE_READY, args.gui_timeout)
            answer = call_api(window, "app_info", timeout=args.gui_timeout) or {}
            info = answer.get("result")
            outcome["app_info"] = (
                {"mode": info["mode"], "version": info["version"], "palette": len(info["palette"])}
                if isinstance(info, dict)
                else answer
            )
            outcome["title"] = window.evaluate_js("document.title")
        except Exception as exc:  # reported below; the window must still close
            outcome["exception"] = f"{type(exc).__name__}: {exc}"
        finally:
            window.destroy()

    started = time.monotonic()
    run_app(_probe=probe)
    info = outcome.get("app_info")
    if not (outcome.get("shown") and isinstance(info, dict) and info.get("mode") == "window"):
        raise RuntimeError(f"app window or bridge failed: {outcome}")
    return {**outcome, "seconds": round(time.monotonic() - started, 1)}


_RUNNERS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "resources": check_resources,
    "torch": check_torch,
    "sam2": check_sam2,
    "gui": check_gui,
    "app": check_app,
}


def main(argv: list[str] | None = None) -> int:
    """Run the requested checks and write {check: {ok, ...}} to the file named by the env variable."""
    parser = argparse.ArgumentParser(prog="sst-desktop (self-test)")
    parser.add_argument(
        "--checks", default=",".join(CHECKS), help="comma-separated subset of checks"
    )
    parser.add_argument("--checkpoint", default=None, help="SAM2 checkpoint file to load")
    parser.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--gui-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    out_path = Path(os.environ.get("SST_BUNDLE_SELFTEST", "selftest.json"))

    results: dict[str, dict] = {}
    for name in [c.strip() for c in args.checks.split(",") if c.strip()]:
        runner = _RUNNERS.get(name)
        if runner is None:
            results[name] = {
                "ok": False,
                "error": f"unknown check; choose from {', '.join(CHECKS)}",
            }
            continue
        try:
            results[name] = {"ok": True, **runner(args)}
        except BaseException as exc:  # a failing check is reported, never kills the others
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        print(f"self-test {name}: {json.dumps(results[name])}", flush=True)
    from sst_desktop.fileio import atomic_write_json

    atomic_write_json(out_path, results)
    return 0 if all(r["ok"] for r in results.values()) else 1
