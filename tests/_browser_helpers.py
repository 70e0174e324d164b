"""Helpers for the browser tests: a generated specimen dataset and project, a `--serve` subprocess
or an in-process server, a chromium page, screenshots."""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"
GROUPS = ("beetle", "moth")
PER_GROUP = 3
WIDTH, HEIGHT = 160, 120
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_specimens(folder: Path) -> Path:
    """Write PNG photos of two coloured 'specimens' on a light background and a CSV; return the CSV."""
    images = folder / "photos"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for g, group in enumerate(GROUPS):
        for i in range(PER_GROUP):
            pk = f"{group}_{i}"
            arr = np.full((HEIGHT, WIDTH, 3), 230, dtype=np.uint8)
            arr += rng.integers(0, 10, size=arr.shape, dtype=np.uint8)
            y, x = 20 + 3 * i, 20 + 4 * i + 6 * g
            arr[y : y + 50, x : x + 60] = (150, 60, 40)  # body
            arr[y + 60 : y + 85, x + 70 : x + 110] = (40, 70, 160)  # label card
            Image.fromarray(arr).save(images / f"{pk}.png")
            rows.append({"specimen": pk, "taxon": group, "site": f"s{i % 2}"})
    csv_path = folder / "specimens.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["specimen", "taxon", "site"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def specimen_config(data: Path, folder: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """The new-project form's config for the specimen photos under `data` (tiny model, 256 px, CPU)."""
    config = {
        "name": name,
        "csv": str(make_specimens(data)),
        "primary_key": "specimen",
        "img_path": "photos/{specimen}.png",
        "image_root": str(data),
        "group_by": ["taxon"],
        "sam2": "sam2.1_hiera_tiny",
        "mask_mode": "original",
        "device": "cpu",
        "image_size": 256,
        "folder": str(folder),
    }
    config.update(overrides)
    return config


def create_specimen_project(tmp_path: Path, name: str, **overrides: Any) -> tuple[dict, Path]:
    """A project of the specimen photos in `tmp_path/project`: (its summary, its folder)."""
    from sst_desktop.app.api import Api

    folder = tmp_path / "project"
    config = specimen_config(tmp_path / "data", folder, name, **overrides)
    return Api(mode="browser").create_project(config), folder


def in_process_server(view: list[str] | None = None) -> tuple[Any, Any]:
    """(api, running server) in this process, browser mode; stop with `stop_in_process`."""
    from sst_desktop.app.api import Api
    from sst_desktop.app.server import start_server

    api = Api(mode="browser", view=view)
    return api, start_server(api)


def stop_in_process(api: Any, running: Any) -> None:
    """Cancel the api's jobs, stop its server and shut it down."""
    for job in api.list_jobs(None):
        api.cancel_job(job["id"])
    running.stop()
    api._shutdown()


@contextlib.contextmanager
def chromium_page(
    request: Any, width: int = 1360, height: int = 860, timeout_ms: int = 30_000
) -> Iterator[Any]:
    """A page of Debian's chromium (headless) collecting uncaught page errors in `page.errors`;
    the final state is saved as a screenshot named after the test. Skips without chromium."""
    import pytest

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.errors = []  # uncaught page errors: the UI must have none
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.set_default_timeout(timeout_ms)
        try:
            yield page
        finally:
            shot(page, f"last-{request.node.name}")  # to look at when a test fails
            browser.close()


def stop_process(proc: subprocess.Popen) -> str:
    """Stop a child process by its PID (terminate, then kill); return its stderr."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stderr.read() if proc.stderr else ""


class ServeProcess:
    """`python -m sst_desktop --serve --port 0` in a subprocess; `url` is its first stdout line."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sst_desktop", "--serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            cwd=str(REPO_ROOT),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            self.url = lines.get(timeout=timeout).strip()
        except queue.Empty:
            self.stop()
            raise RuntimeError("sst-desktop --serve printed no URL") from None
        if not self.url.startswith("http"):
            err = self.stop()
            raise RuntimeError(f"sst-desktop --serve printed {self.url!r}; stderr: {err}")
        self.base = self.url.split("/?", 1)[0]
        self.token = self.url.split("token=", 1)[1]

    def stop(self) -> str:
        """Stop the server; returns its stderr for failure messages."""
        return stop_process(self.proc)


def shot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Finds a screen point (page coordinates) where a click on the label canvas adds a candidate mask:
# a pixel whose smallest covering candidate is that mask and that no mask in `exclude` (already
# added, so labelled) covers. It reads the candidates' PNGs and maps the pixel through the
# canvas's view transform (data-scale/tx/ty).
POINT_IN_MASK_JS = """
async (exclude) => {
  const { call, withToken } = await import("/js/transport.js");
  const stage = document.getElementById("stage");
  const canvas = stage.querySelector("canvas");
  const pid = decodeURIComponent(location.hash.split("/")[2]);
  const frame = await call("open_frame", pid, stage.dataset.pk);
  const W = frame.width, H = frame.height;
  const masks = frame.masks.filter((m) => m.source === "candidate").sort((a, b) => a.area - b.area);
  const inside = [];
  const taken = new Uint8Array(W * H);
  for (const m of masks) {
    const img = new Image();
    img.src = withToken(m.url);
    await img.decode();
    const c = document.createElement("canvas");
    c.width = W; c.height = H;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0, W, H);
    const d = g.getImageData(0, 0, W, H).data;
    const bits = new Uint8Array(W * H);
    for (let i = 0; i < W * H; i++) bits[i] = d[i * 4 + 3] > 0 ? 1 : 0;
    inside.push(bits);
    if (exclude.includes(m.index)) for (let i = 0; i < W * H; i++) taken[i] |= bits[i];
  }
  // For each pixel, the position (in ascending area order) of the smallest mask covering it.
  const smallest = new Int32Array(W * H).fill(-1);
  for (let k = masks.length - 1; k >= 0; k--) for (let i = 0; i < W * H; i++) if (inside[k][i]) smallest[i] = k;
  for (let k = 0; k < masks.length; k++) {
    const m = masks[k];
    if (exclude.includes(m.index) || m.area < 20) continue;
    let best = null, bestD = Infinity, sx = 0, sy = 0, n = 0;
    const free = (i) => smallest[i] === k && !taken[i];
    for (let i = 0; i < W * H; i++) if (free(i)) { sx += i % W; sy += Math.floor(i / W); n++; }
    if (n < 4) continue;
    const cx = sx / n, cy = sy / n;
    for (let i = 0; i < W * H; i++) {
      if (!free(i)) continue;
      const dd = (i % W - cx) ** 2 + (Math.floor(i / W) - cy) ** 2;
      if (dd < bestD) { bestD = dd; best = [i % W, Math.floor(i / W)]; }
    }
    const r = canvas.getBoundingClientRect();
    const s = Number(canvas.dataset.scale), tx = Number(canvas.dataset.tx), ty = Number(canvas.dataset.ty);
    return { index: m.index, area: m.area, ix: best[0], iy: best[1],
      x: r.left + tx + (best[0] + 0.5) * s, y: r.top + ty + (best[1] + 0.5) * s };
  }
  return null;
}
"""


def candidate_settings(page, values: dict[str, str]) -> None:
    """Change candidate settings in the label screen's box; each is saved in the project."""
    page.wait_for_selector("#cand-preset")
    for name, value in values.items():
        box = page.locator(f'#cand-params input[data-param="{name}"]')
        box.fill(value)
        box.dispatch_event("change")
        # Saved and shown again (the box is redrawn from the project's answer).
        page.wait_for_selector(f'#cand-params [data-setting="{name}"].changed')
