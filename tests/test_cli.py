"""`sst-desktop` command line: every flag and exit code, resume after SIGKILL, --help without torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import REPO, cli_env, image_path, make_project, run_cli
from PIL import Image

from sst_desktop import __version__
from sst_desktop.cli import main
from sst_desktop.data.masks import read_mask


def _preds(spec: Path) -> dict[str, Path]:
    folder = spec.parent / "pred_masks"
    return {p.stem: p for p in sorted(folder.glob("*.png"))} if folder.is_dir() else {}


def _error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("sst-desktop: error: ")
    return lines[0]


# ----------------------------------------------------------------------------- no model needed


def test_help_lists_every_flag_and_does_not_import_torch():
    code = (
        "import sys\n"
        "from sst_desktop.cli import main\n"
        "rc = main(['--help'])\n"
        "heavy = [m for m in ('torch', 'sam2', 'webview', 'pandas') if m in sys.modules]\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "RC 0 HEAVY []" in out.stdout
    for flag in (
        "--infer", "--dry-run", "--batch-size", "--max-frames", "--overwrite", "--groups",
        "--device", "--quiet", "--view", "--out", "--serve", "--port", "--host", "--project",
        "--version", "--decode-images", "--alpha",
    ):  # fmt: skip
        assert flag in out.stdout, flag
    assert "Exit codes" in out.stdout


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sst-desktop {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--overwrite"],
        ["--batch-size", "2"],
        ["--infer", "x.json", "--batch-size", "0"],
        ["--infer", "x.json", "--max-frames", "-1"],
        ["--infer", "x.json", "--device", "gpu"],
        ["--infer", "x.json", "--view", "m.png"],
        ["--infer", "x.json", "--dry-run", "--overwrite"],
        ["--infer", "x.json", "--decode-images"],
        ["--out", "o.png"],
        ["--port", "8000"],
        ["--view"],
        ["--bogus"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_spec_is_one_line_and_exit_2(tmp_path):
    out = run_cli("--infer", str(tmp_path / "nope.json"))
    assert out.returncode == 2
    assert "nope.json" in _error_line(out.stderr)


def test_unknown_group_is_exit_2(tmp_path, sam2_checkpoint, capsys):
    spec = make_project(tmp_path, sam2_checkpoint)
    assert main(["--infer", str(spec), "--groups", "set=zzz"]) == 2
    assert "unknown group 'set=zzz'" in _error_line(capsys.readouterr().err)


def test_missing_checkpoint_is_exit_2(tmp_path, sam2_checkpoint, capsys):
    spec = make_project(tmp_path, sam2_checkpoint)
    data = json.loads(spec.read_text())
    data["checkpoint"] = str(tmp_path / "missing.pt")
    spec.write_text(json.dumps(data))
    assert main(["--infer", str(spec), "--quiet"]) == 2
    assert "missing.pt" in _error_line(capsys.readouterr().err)
    assert _preds(spec) == {}
    # What happened before the error is still recorded.
    (saved,) = (spec.parent / "runs").glob("*.json")
    assert "missing.pt" in json.loads(saved.read_text())["error"]
    assert main(["--infer", str(spec), "--dry-run"]) == 1
    assert "problem: Checkpoint file" in capsys.readouterr().out


def test_app_without_display_says_what_to_do(monkeypatch, capsys, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check is Linux-only")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main([]) == 2
    assert "--serve" in _error_line(capsys.readouterr().err)
    assert main(["--project", str(tmp_path / "none.json")]) == 2
    assert "none.json" in _error_line(capsys.readouterr().err)


def test_dry_run_exit_codes_and_failing_pks_last(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    ok = run_cli("--infer", str(spec), "--dry-run")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "No problems found." in ok.stdout and "set=b" in ok.stdout

    image_path(spec, "a2").write_bytes(b"garbage")
    image_path(spec, "b1").unlink()
    bad = run_cli("--infer", str(spec), "--dry-run", "--decode-images")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = bad.stdout.strip().splitlines()
    assert lines[-3] == "Failing primary keys (2):" and lines[-2:] == ["a2", "b1"]
    quiet = run_cli("--infer", str(spec), "--dry-run", "--quiet")
    assert quiet.returncode == 1 and quiet.stdout.split() == ["a2", "b1"]
    assert _preds(spec) == {} and not (spec.parent / "runs").exists()


# ----------------------------------------------------------------------------- with the model


def test_infer_writes_predictions_with_plain_progress_and_exit_0(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    out = run_cli("--infer", str(spec), "--batch-size", "2", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert sorted(_preds(spec)) == ["a1", "a2", "a3", "a4"]
    for pk, path in _preds(spec).items():
        size = Image.open(image_path(spec, pk)).size
        assert set(np.unique(read_mask(path, expected_size=size))) <= {0, 1, 2}
    # Not a terminal: plain lines, no carriage-return bar; the group without references by label.
    assert "\r" not in out.stderr
    assert "Group b skipped: no reference masks" in out.stderr
    assert "4/4 (100%)" in out.stderr
    assert "written:   4" in out.stdout and "groups without references: 1" in out.stdout
    runs = list((spec.parent / "runs").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["options"]["batch_size"] == 2


def test_quiet_groups_max_frames_then_overwrite(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint, references={"a": 1, "b": 1})
    out = run_cli("--infer", str(spec), "--quiet", "--groups", "set=b", "--max-frames", "1")
    assert out.returncode == 0, out.stderr
    assert (out.stdout, out.stderr) == ("", "")
    assert sorted(_preds(spec)) == ["b1"]
    before = _preds(spec)["b1"].stat().st_mtime_ns

    again = run_cli("--infer", str(spec), "--quiet", "--groups", "set=b")
    assert again.returncode == 0 and _preds(spec)["b1"].stat().st_mtime_ns == before
    over = run_cli("--infer", str(spec), "--quiet", "--groups", "set=b", "--overwrite")
    assert over.returncode == 0 and _preds(spec)["b1"].stat().st_mtime_ns != before


def test_corrupt_frame_exit_1_and_rest_written(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    image_path(spec, "a2").write_bytes(b"\xff\xd8\xff truncated jpeg")
    out = run_cli("--infer", str(spec))
    assert out.returncode == 1, out.stderr
    assert sorted(_preds(spec)) == ["a1", "a3", "a4"]
    assert "Failed a2:" in out.stderr and "a2.png" in out.stderr
    assert "failed:    1" in out.stdout


def test_resume_after_sigkill(tmp_path, sam2_checkpoint):
    sizes = [(64, 48), (48, 64), (56, 56)] * 4
    spec = make_project(tmp_path, sam2_checkpoint, groups={"a": sizes}, references={"a": 1})
    targets = [f"a{i}" for i in range(1, len(sizes))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_desktop", "--infer", str(spec)],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pred_dir = spec.parent / "pred_masks"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if pred_dir.is_dir() and any(pred_dir.glob("*.png")):
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = {pk: p.stat().st_mtime_ns for pk, p in _preds(spec).items()}
    assert 1 <= len(before) < len(targets)

    out = run_cli("--infer", str(spec))
    assert out.returncode == 0, out.stderr
    assert sorted(_preds(spec)) == sorted(targets)
    for pk, path in _preds(spec).items():
        size = Image.open(image_path(spec, pk)).size
        assert set(np.unique(read_mask(path, expected_size=size))) <= {0, 1, 2}
    assert {pk: _preds(spec)[pk].stat().st_mtime_ns for pk in before} == before
    assert list(pred_dir.glob(".*")) == []  # no temp files left
    assert f"skipped:   {len(before)}" in out.stdout


def test_serve_prints_the_url_first(tmp_path):
    pytest.importorskip("sst_desktop.app.api")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_desktop", "--serve", "--port", "0"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("http://127.0.0.1:") and "token=" in first
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_prediction(proc: subprocess.Popen, pred_dir: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if pred_dir.is_dir() and any(pred_dir.glob("*.png")):
            return
        time.sleep(0.02)


def test_ctrl_c_finishes_the_batch_saves_the_summary_and_exits_130(tmp_path, sam2_checkpoint):
    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 12}, references={"a": 1}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_desktop", "--infer", str(spec)],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_prediction(proc, spec.parent / "pred_masks")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Stopping after the current batch" in stderr and "Summary (cancelled)" in stdout
    written = sorted(_preds(spec))
    assert 1 <= len(written) < 11
    (saved,) = (spec.parent / "runs").glob("*.json")
    data = json.loads(saved.read_text())
    assert data["cancelled"] is True and sorted(data["written_pks"]) == written
    assert list((spec.parent / "pred_masks").glob(".*")) == []


def test_progress_bar_on_a_terminal(tmp_path, sam2_checkpoint):
    import pty

    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 3}, references={"a": 1}
    )
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sst_desktop", "--infer", str(spec)],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        stdout = proc.stdout.read()
        proc.wait(timeout=120)
    finally:
        os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert "\r[" in text and "2/2 (100%)" in text and "img/s" in text
    assert "written:   2" in stdout


def test_dry_run_of_an_original_sst_gui_spec(tmp_path, sam2_checkpoint):
    """Original specs name no checkpoint: the dry run warns it would be downloaded, and passes."""
    spec = make_project(tmp_path, sam2_checkpoint)
    root = spec.parent
    (root / "images.csv").rename(root / "master.csv")
    legacy = {
        "root": str(root),
        "filter_query": "SELECT * FROM master_df",
        "group_by": ["set"],
        "img_path": "file",
        "primary_key": "id",
        "sam2": "facebook/sam2.1-hiera-tiny",
        "device": "cpu",
        "mask_mode": "original",
    }
    spec.write_text(json.dumps(legacy))
    # Its image paths resolve against root/; put the images there.
    for image in (tmp_path / "images").iterdir():
        image.rename(root / image.name)
    out = run_cli("--infer", str(spec), "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "will download it" in out.stdout and "No problems found." in out.stdout


def test_console_entry_exits_despite_a_blocked_non_daemon_thread():
    """pywebview can leave a JS-call thread blocked after the window closes; we must still exit."""
    code = (
        "import sys, threading\n"
        "threading.Thread(target=threading.Event().wait).start()\n"
        "sys.argv = ['sst-desktop', '--version']\n"
        "from sst_desktop.cli import console_main\n"
        "console_main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip()


def test_output_piped_into_head_ends_without_a_traceback(tmp_path, sam2_checkpoint):
    """`sst-desktop --infer spec --dry-run | head -1`: the reader leaves early (broken pipe)."""
    spec = make_project(tmp_path, sam2_checkpoint)
    # 5,000 rows whose images do not exist: the dry run prints well over a pipe buffer (64 KB).
    with open(spec.parent / "images.csv", "a", encoding="utf-8", newline="") as f:
        for index in range(5000):
            f.write(f"missing-specimen-{index:06d},a,missing-specimen-{index:06d}.png\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_desktop", "--infer", str(spec), "--dry-run"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert first.strip()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr.strip() == ""
    assert proc.returncode == 1
