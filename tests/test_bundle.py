"""The PyInstaller one-folder app: build it (CPU-only) and run its headless flags and GUI bridge.

Slow: the build takes minutes. `SST_BUNDLE_DIR=dist/sst-desktop` reuses a bundle built by
packaging/build.sh instead of building one.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_IMAGE_SIZE, TEST_VARIANT
from PIL import Image

from sst_desktop import __version__

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXE_NAME = "sst-desktop.exe" if sys.platform == "win32" else "sst-desktop"
# The bundle the test builds goes under build/ (ignored by git), replaced on every build.
TEST_DIST = ROOT / "build" / "test-bundle"
TEST_WORK = ROOT / "build" / "pyinstaller-test"
RUN_TIMEOUT = 600


@pytest.fixture(scope="session")
def bundle_exe() -> Path:
    """The bundled executable: $SST_BUNDLE_DIR's, or a CPU-only bundle built now."""
    given = os.environ.get("SST_BUNDLE_DIR")
    if given:
        exe = Path(given).resolve() / EXE_NAME
        assert exe.is_file(), f"SST_BUNDLE_DIR={given} holds no {EXE_NAME}: build it or unset it"
        return exe
    shutil.rmtree(TEST_DIST, ignore_errors=True)
    env = dict(os.environ, SST_BUNDLE_CPU_ONLY="1", SST_DIST_DIR=str(TEST_DIST))
    env["SST_BUILD_DIR"] = str(TEST_WORK)
    build = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert build.returncode == 0, (
        f"bundle build failed:\n{build.stdout[-4000:]}\n{build.stderr[-8000:]}"
    )
    exe = TEST_DIST / "sst-desktop" / EXE_NAME
    assert exe.is_file(), f"build succeeded but {exe} is missing"
    return exe


def run_bundle(
    exe: Path, *args: str, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess:
    """Run the bundled app headless (no display) and return its completed process."""
    run_env = dict(os.environ if env is None else env)
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        run_env.pop(var, None)
    # The frozen app must not lean on the checkout's Python packages.
    run_env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(exe), *args],
        cwd=exe.parent,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def explain(proc: subprocess.CompletedProcess) -> str:
    """The tail of a finished process's output, for assertion messages."""
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"


def make_project(folder: Path, checkpoint: Path | None) -> Path:
    """A tiny project: 4 images of a square in one group, the first one labelled; returns spec.json."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = ["pk,file,species"]
    rng = np.random.default_rng(0)
    for i in range(4):
        width, height = 96 + 8 * i, 80
        pixels = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
        pixels[20:60, 30 + 4 * i : 70 + 4 * i] = (220, 60, 40)
        Image.fromarray(pixels).save(images / f"img{i}.png")
        rows.append(f"p{i},images/img{i}.png,beetle")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    refs = folder / "ref_masks"
    refs.mkdir()
    mask = np.zeros((80, 96), dtype=np.uint8)
    mask[20:60, 30:70] = 1
    Image.fromarray(mask, mode="L").save(refs / "p0.png")
    spec = {
        "version": 1,
        "name": "bundle test",
        "root": ".",
        "csv": "images.csv",
        "primary_key": "pk",
        "img_path": "file",
        "group_by": ["species"],
        "sam2": TEST_VARIANT,
        "device": "cpu",
        "image_size": TEST_IMAGE_SIZE,
        "mask_mode": "original",
    }
    if checkpoint is not None:
        spec["checkpoint"] = str(checkpoint)
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def assert_predictions(project: Path) -> None:
    """pred_masks/ holds an 8-bit ID mask at each target image's size, and none for the reference."""
    assert not (project / "pred_masks" / "p0.png").exists(), "the reference got a prediction"
    for i in range(1, 4):
        pred = project / "pred_masks" / f"p{i}.png"
        assert pred.is_file(), f"{pred} was not written"
        with Image.open(pred) as mask:
            assert mask.mode == "L"
            assert mask.size == (96 + 8 * i, 80)


def test_help(bundle_exe: Path) -> None:
    proc = run_bundle(bundle_exe, "--help")
    assert proc.returncode == 0, explain(proc)
    for flag in ("--infer", "--dry-run", "--view", "--out"):
        assert flag in proc.stdout, f"{flag} missing from --help:\n{proc.stdout}"


def test_bundle_layout_has_no_checkpoints(bundle_exe: Path) -> None:
    """UI and SAM2 configs are inside; model weights never are (they go to the models folder)."""
    internal = bundle_exe.parent / "_internal"
    assert (internal / "ui" / "index.html").is_file()
    assert (internal / "sam2" / "configs" / "sam2.1" / "sam2.1_hiera_t.yaml").is_file()
    weights = [
        p
        for pattern in ("*.pt", "*.pth", "*.safetensors")
        for p in bundle_exe.parent.rglob(pattern)
    ]
    assert weights == [], f"model weights inside the bundle: {weights}"


def test_packaged_resources_torch_and_sam2(
    bundle_exe: Path, tmp_path: Path, sam2_checkpoint: Path
) -> None:
    """Inside the bundle: UI and sample data found, torch computes, Hydra builds SAM2 and loads weights."""
    report = tmp_path / "selftest.json"
    env = dict(os.environ, SST_BUNDLE_SELFTEST=str(report))
    proc = run_bundle(
        bundle_exe,
        "--checks",
        "resources,torch,sam2",
        "--checkpoint",
        str(sam2_checkpoint),
        "--image-size",
        str(TEST_IMAGE_SIZE),
        env=env,
    )
    assert report.is_file(), explain(proc)
    results = json.loads(report.read_text())
    assert proc.returncode == 0, f"{json.dumps(results, indent=2)}\n{explain(proc)}"
    internal = bundle_exe.parent.resolve()
    assert results["resources"]["frozen"] is True
    assert Path(results["resources"]["ui"]).resolve().is_relative_to(internal)
    assert Path(results["resources"]["sample_data"]).resolve().is_relative_to(internal)
    assert results["sam2"]["checkpoint_loaded"] is True


def test_infer_dry_run_then_infer_with_checkpoint_file(
    bundle_exe: Path, tmp_path: Path, sam2_checkpoint: Path
) -> None:
    spec = make_project(tmp_path / "project", checkpoint=sam2_checkpoint)

    dry = run_bundle(bundle_exe, "--infer", str(spec), "--dry-run")
    assert dry.returncode == 0, explain(dry)
    assert not (tmp_path / "project" / "pred_masks").exists() or not any(
        (tmp_path / "project" / "pred_masks").iterdir()
    ), "--dry-run wrote predictions"

    run = run_bundle(bundle_exe, "--infer", str(spec))
    assert run.returncode == 0, explain(run)
    assert_predictions(tmp_path / "project")

    overlay = tmp_path / "overlay.png"
    view = run_bundle(
        bundle_exe,
        "--view",
        str(tmp_path / "project" / "pred_masks" / "p1.png"),
        str(tmp_path / "project" / "ref_masks" / "p0.png"),
        "--out",
        str(overlay),
    )
    assert view.returncode == 0, explain(view)
    with Image.open(overlay) as image:
        assert image.width >= 96 and image.height >= 80
        # The overlay is coloured where the masks are: not a plain grey copy of the images.
        rgb = np.asarray(image.convert("RGB")).astype(int)
        assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 60).any()


def test_infer_downloads_checkpoint_into_models_folder(
    bundle_exe: Path, tmp_path: Path, sam2_checkpoint: Path, isolated_data_dir: Path
) -> None:
    """Without a checkpoint file, the bundle downloads one into the app's models folder, then runs."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(sam2_checkpoint, served / f"{TEST_VARIANT}.pt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = make_project(tmp_path / "project", checkpoint=None)
        env = dict(os.environ, SST_DESKTOP_MODEL_URL=f"http://127.0.0.1:{server.server_port}/")
        proc = run_bundle(bundle_exe, "--infer", str(spec), env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, explain(proc)
    downloaded = isolated_data_dir / "models" / f"{TEST_VARIANT}.pt"
    assert downloaded.is_file(), f"no checkpoint in the models folder\n{explain(proc)}"
    assert downloaded.stat().st_size == sam2_checkpoint.stat().st_size
    assert_predictions(tmp_path / "project")


def test_app_window_opens_and_bridge_round_trips_offscreen(
    bundle_exe: Path, tmp_path: Path
) -> None:
    """The bundled app window (Qt, offscreen) loads its UI and app_info() comes back through JS."""
    report = tmp_path / "selftest.json"
    env = dict(os.environ, SST_BUNDLE_SELFTEST=str(report), QT_QPA_PLATFORM="offscreen")
    env.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu")
    proc = run_bundle(bundle_exe, "--checks", "app", "--gui-timeout", "90", env=env, timeout=300)
    assert report.is_file(), explain(proc)
    result = json.loads(report.read_text())["app"]
    assert result["ok"], f"{result}\n{explain(proc)}"
    assert result["bridge"] == "function"
    assert result["app_info"] == {"mode": "window", "version": __version__, "palette": 256}
    assert result["title"] == "SST Desktop"
    assert proc.returncode == 0, explain(proc)
