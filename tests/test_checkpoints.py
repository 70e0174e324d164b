"""Checkpoint lookup, download with resume from a local HTTP server, and verification."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sst_desktop import paths
from sst_desktop.engine import checkpoints
from sst_desktop.errors import CheckpointError


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, Path]
    ignore_range: bool = False
    cut_after: int | None = None  # send only this many body bytes, then drop the connection
    chunked_cut: int | None = None  # chunked reply cut after this many bytes
    range_shift: int = 0  # a 206 reply starts this many bytes away from the asked-for start
    delay: float = 0.0  # seconds to wait before each 1 MB chunk (slow link)
    requests: list[tuple[str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server: _Server = self.server  # type: ignore[assignment]
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        server.requests.append((name, rng))
        path = server.files.get(name)
        if path is None:
            self.send_error(404, "Not Found")
            return
        size = path.stat().st_size
        if server.chunked_cut is not None:
            # A chunked reply (no Content-Length) that stops in the middle of its first chunk.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(f"{size:x}\r\n".encode() + path.read_bytes()[: server.chunked_cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        start = 0
        if rng and not server.ignore_range:
            start = int(rng.split("=", 1)[1].split("-", 1)[0]) + server.range_shift
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        budget = server.cut_after
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                time.sleep(server.delay)
                if budget is not None:
                    chunk = chunk[:budget]
                    budget -= len(chunk)
                self.wfile.write(chunk)
                if budget == 0:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests = {}, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.base_url = f"http://127.0.0.1:{srv.server_address[1]}/models"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _never_reach_the_internet(monkeypatch):
    """Any download a test does not aim at its local server goes to a closed port."""
    monkeypatch.setenv(checkpoints.MODEL_URL_ENV, f"http://127.0.0.1:{_closed_port()}/")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TINY = "sam2.1_hiera_tiny"


def test_full_download_with_progress(server, sam2_checkpoint):
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    calls = []
    path = checkpoints.ensure_checkpoint(
        TINY, progress=lambda done, total: calls.append((done, total)), base_url=server.base_url
    )
    size = sam2_checkpoint.stat().st_size
    assert path == paths.models_dir() / "sam2.1_hiera_tiny.pt"
    assert _sha(path) == _sha(sam2_checkpoint)
    assert not path.with_name(path.name + ".part").exists()
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Now present: a second call uses the file without contacting the server.
    server.requests.clear()
    assert checkpoints.ensure_checkpoint(TINY, base_url=server.base_url) == path
    assert server.requests == []


def test_resume_from_partial_file(server, sam2_checkpoint):
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    data = sam2_checkpoint.read_bytes()
    part = paths.models_dir() / "sam2.1_hiera_tiny.pt.part"
    part.write_bytes(data[: len(data) // 3])
    calls = []
    path = checkpoints.download_checkpoint(
        TINY, progress=lambda d, t: calls.append(d), base_url=server.base_url
    )
    assert server.requests == [("sam2.1_hiera_tiny.pt", f"bytes={len(data) // 3}-")]
    assert calls[0] == len(data) // 3
    assert path.read_bytes() == data
    assert not part.exists()


def test_server_without_range_support_restarts(server, sam2_checkpoint):
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    server.ignore_range = True
    part = paths.models_dir() / "sam2.1_hiera_tiny.pt.part"
    part.write_bytes(b"garbage that must not stay at the front")
    path = checkpoints.download_checkpoint(TINY, base_url=server.base_url)
    assert _sha(path) == _sha(sam2_checkpoint)


@pytest.mark.parametrize("shift", [-1000, 1000])
def test_resume_restarts_when_the_server_sends_another_range(server, sam2_checkpoint, shift):
    # A server (or proxy) that answers "Range: bytes=N-" with bytes from elsewhere, saying so in
    # Content-Range: appending them would corrupt the file.
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    server.range_shift = shift
    data = sam2_checkpoint.read_bytes()
    part = paths.models_dir() / "sam2.1_hiera_tiny.pt.part"
    part.write_bytes(data[:3_000_000])
    path = checkpoints.download_checkpoint(TINY, base_url=server.base_url)
    assert server.requests == [
        ("sam2.1_hiera_tiny.pt", "bytes=3000000-"),
        ("sam2.1_hiera_tiny.pt", None),
    ]
    assert _sha(path) == _sha(sam2_checkpoint)
    assert not part.exists()


_DOWNLOAD_SCRIPT = """
import sys
from sst_desktop.engine import checkpoints
path = checkpoints.download_checkpoint("sam2.1_hiera_tiny", base_url=sys.argv[1])
print("DONE", path)
"""


def test_two_processes_downloading_the_same_file_take_turns(
    server, sam2_checkpoint, isolated_data_dir
):
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    server.delay = 0.02  # ~3 s for the ~150 MB file: the second process starts in the middle
    env = {**os.environ, "SST_DESKTOP_DATA_DIR": str(isolated_data_dir)}
    repo = Path(__file__).resolve().parents[1]

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", _DOWNLOAD_SCRIPT, server.base_url],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    part = paths.models_dir() / "sam2.1_hiera_tiny.pt.part"
    first = start()
    deadline = time.monotonic() + 60
    while not (part.is_file() and part.stat().st_size > 0):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = start()
    outs = [p.communicate(timeout=240) for p in (first, second)]
    for proc, (out, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, err
        assert "DONE" in out
    assert "waiting for another download of sam2.1_hiera_tiny.pt" in outs[1][1]
    dest = paths.models_dir() / "sam2.1_hiera_tiny.pt"
    assert _sha(dest) == _sha(sam2_checkpoint)
    assert not part.exists()
    # Only the first process fetched; the second found the finished file.
    assert server.requests == [("sam2.1_hiera_tiny.pt", None)]
    checkpoints.verify_checkpoint(TINY, dest)
    assert not part.with_name(part.name + ".lock").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl")
def test_waiting_for_another_download_reports_and_can_be_cancelled(server, sam2_checkpoint):
    import fcntl

    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    lock_path = checkpoints.download_lock_path(paths.models_dir() / "sam2.1_hiera_tiny.pt")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    messages, seen = [], []

    def progress(done, total):
        seen.append((done, total))
        if len(seen) >= 2:
            raise KeyboardInterrupt  # how a user's Cancel ends a wait

    with open(lock_path, "a+b") as held:  # another process's download, as far as flock can tell
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(KeyboardInterrupt):
            checkpoints.download_checkpoint(
                TINY, base_url=server.base_url, progress=progress, message=messages.append
            )
    assert messages == [
        f"waiting for another download of sam2.1_hiera_tiny.pt to finish "
        f"({paths.models_dir() / 'sam2.1_hiera_tiny.pt.part'})"
    ]
    assert seen == [(0, None), (0, None)]
    assert server.requests == []
    # Released by its holder, the lock is free again for a real download.
    path = checkpoints.download_checkpoint(TINY, base_url=server.base_url)
    assert _sha(path) == _sha(sam2_checkpoint)


def test_dropped_connection_keeps_part_and_resumes(server, sam2_checkpoint):
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    server.cut_after = 5_000_000
    with pytest.raises(CheckpointError) as info:
        checkpoints.download_checkpoint(TINY, base_url=server.base_url, timeout=10)
    assert "resume" in str(info.value) and "sam2.1_hiera_tiny.pt" in str(info.value)
    part = paths.models_dir() / "sam2.1_hiera_tiny.pt.part"
    assert part.stat().st_size == 5_000_000
    assert not (paths.models_dir() / "sam2.1_hiera_tiny.pt").exists()
    server.cut_after = None
    path = checkpoints.download_checkpoint(TINY, base_url=server.base_url)
    assert server.requests[-1][1] == "bytes=5000000-"
    assert _sha(path) == _sha(sam2_checkpoint)


def test_dropped_chunked_reply_is_a_clear_error_and_resumes(server, sam2_checkpoint):
    server.files["sam2.1_hiera_tiny.pt"] = sam2_checkpoint
    server.chunked_cut = 3_000_000
    with pytest.raises(CheckpointError) as info:
        checkpoints.download_checkpoint(TINY, base_url=server.base_url, timeout=10)
    assert "resume" in str(info.value) and str(paths.models_dir()) in str(info.value)
    assert not (paths.models_dir() / "sam2.1_hiera_tiny.pt").exists()
    server.chunked_cut = None
    path = checkpoints.download_checkpoint(TINY, base_url=server.base_url)
    assert _sha(path) == _sha(sam2_checkpoint)


def test_model_url_without_scheme_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(checkpoints.MODEL_URL_ENV, "mirror.example.org/sam2")
    with pytest.raises(CheckpointError, match="mirror.example.org/sam2/sam2.1_hiera_tiny.pt"):
        checkpoints.ensure_checkpoint(TINY)
    assert not any(paths.models_dir().iterdir())


def test_http_404_names_file_and_folder(server):
    with pytest.raises(CheckpointError) as info:
        checkpoints.ensure_checkpoint(TINY, base_url=server.base_url)
    message = str(info.value)
    assert "sam2.1_hiera_tiny.pt" in message and "404" in message
    assert str(paths.models_dir()) in message
    assert "\n" not in message
    assert not any(paths.models_dir().iterdir())


def test_offline_via_env_override_names_file_and_folder():
    # The autouse fixture points $SST_DESKTOP_MODEL_URL at a closed port.
    with pytest.raises(CheckpointError) as info:
        checkpoints.ensure_checkpoint("sam2.1_hiera_large")
    message = str(info.value)
    assert "sam2.1_hiera_large.pt" in message and str(paths.models_dir()) in message


def test_official_url_without_override(monkeypatch):
    monkeypatch.delenv(checkpoints.MODEL_URL_ENV)
    assert checkpoints.checkpoint_url("facebook/sam2-hiera-small") == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt"
    )
    assert checkpoints.checkpoint_url(TINY, base_url="http://mirror/x/") == (
        "http://mirror/x/sam2.1_hiera_tiny.pt"
    )


def test_truncated_download_is_rejected_and_deleted(server, sam2_checkpoint, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(sam2_checkpoint.read_bytes()[:20_000_000])
    server.files["sam2.1_hiera_tiny.pt"] = broken
    with pytest.raises(CheckpointError) as info:
        checkpoints.download_checkpoint(TINY, base_url=server.base_url)
    assert (
        "not a valid sam2.1_hiera_tiny checkpoint (it is damaged or incomplete); it was deleted"
        in str(info.value)
    )
    assert not any(paths.models_dir().iterdir())


def test_wrong_variant_download_is_rejected(server, sam2_checkpoint):
    # A tiny checkpoint published under the small model's name.
    server.files["sam2.1_hiera_small.pt"] = sam2_checkpoint
    with pytest.raises(
        CheckpointError,
        match="is SAM 2.1 tiny; the project uses SAM 2.1 small .it does not fit model sam2.1_hiera_small",
    ):
        checkpoints.ensure_checkpoint("sam2.1_hiera_small", base_url=server.base_url)
    assert not (paths.models_dir() / "sam2.1_hiera_small.pt").exists()


def test_explicit_path_wins_and_is_verified(server, sam2_checkpoint, tmp_path):
    assert checkpoints.ensure_checkpoint(TINY, explicit=sam2_checkpoint) == sam2_checkpoint
    assert server.requests == []
    with pytest.raises(CheckpointError, match="does not fit model sam2_hiera_tiny"):
        checkpoints.ensure_checkpoint("sam2_hiera_tiny", explicit=sam2_checkpoint)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.ensure_checkpoint(TINY, explicit=tmp_path / "missing.pt")


def test_models_folder_copy_is_found(sam2_checkpoint):
    assert checkpoints.find_checkpoint(TINY) is None
    target = paths.models_dir() / "sam2.1_hiera_tiny.pt"
    shutil.copyfile(sam2_checkpoint, target)
    assert checkpoints.find_checkpoint("facebook/sam2.1-hiera-tiny") == target
    assert checkpoints.ensure_checkpoint(TINY) == target


def test_verify_rejects_missing_keys_and_non_checkpoints(tmp_path):
    import torch

    partial = tmp_path / "partial.pt"
    torch.save({"model": {"no_mem_embed": torch.zeros(1, 1, 256)}}, partial)
    with pytest.raises(CheckpointError, match=r"does not fit model .*missing"):
        checkpoints.verify_checkpoint(TINY, partial)

    no_model = tmp_path / "no_model.pt"
    torch.save({"weights": {}}, no_model)
    with pytest.raises(CheckpointError, match=r"no_model\.pt is not a SAM2 checkpoint"):
        checkpoints.verify_checkpoint(TINY, no_model)

    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a SAM2 checkpoint") as info:
        checkpoints.verify_checkpoint(TINY, text)
    assert "\n" not in str(info.value)


def test_a_users_file_that_is_no_checkpoint_is_named_and_never_to_be_deleted(tmp_path):
    # A project's own CSV chosen as the checkpoint in Settings.
    table = tmp_path / "specimens.csv"
    table.write_text("specimen,taxon,file\nb1,beetle,b1.jpg\nm1,moth,m1.jpg\n", encoding="utf-8")
    with pytest.raises(CheckpointError) as info:
        checkpoints.verify_checkpoint(TINY, table)
    text = str(info.value)
    assert text == (
        f"File {table} is not a SAM2 checkpoint: choose a .pt checkpoint file such as "
        f"sam2.1_hiera_tiny.pt, or clear the path to use sam2.1_hiera_tiny.pt from "
        f"{paths.models_dir()} (downloaded when first needed)."
    )
    assert "delete" not in text and "pop from" not in text and "\n" not in text
    assert table.read_text(encoding="utf-8").startswith("specimen,taxon")


def test_a_truncated_checkpoint_is_damaged_and_only_the_apps_own_copy_is_to_be_deleted(
    tmp_path, sam2_checkpoint
):
    cut = sam2_checkpoint.read_bytes()[:5_000_000]
    mine = tmp_path / "my_tiny.pt"
    mine.write_bytes(cut)
    with pytest.raises(CheckpointError) as info:
        checkpoints.verify_checkpoint(TINY, mine)
    text = str(info.value)
    assert text.startswith(f"Checkpoint file {mine} is damaged or incomplete: copy or download")
    assert "delete" not in text and "PytorchStreamReader" not in text and "\n" not in text

    # The same bytes where the app downloads its models: that file may be deleted and fetched.
    own = paths.models_dir() / "sam2.1_hiera_tiny.pt"
    own.write_bytes(cut)
    with pytest.raises(CheckpointError) as info:
        checkpoints.ensure_checkpoint(TINY)
    assert str(info.value) == (
        f"Checkpoint {own} cannot be loaded (it is damaged or incomplete): delete it and "
        f"download sam2.1_hiera_tiny.pt again, or put a good copy in {own.parent}."
    )
    # Named like a model but chosen from elsewhere: still the user's file.
    elsewhere = tmp_path / "sam2.1_hiera_tiny.pt"
    elsewhere.write_bytes(cut)
    with pytest.raises(CheckpointError, match="damaged or incomplete: copy") as info:
        checkpoints.ensure_checkpoint(TINY, explicit=elsewhere)
    assert "delete" not in str(info.value)


def test_verify_rejects_an_extra_or_reshaped_weight(tmp_path, sam2_checkpoint):
    import torch

    state = torch.load(sam2_checkpoint, map_location="cpu", weights_only=True, mmap=True)["model"]
    state = dict(state)
    state["no_mem_embed"] = torch.zeros(1, 1, 128)
    reshaped = tmp_path / "reshaped.pt"
    torch.save({"model": state}, reshaped)
    with pytest.raises(CheckpointError, match="nor any other SAM2 variant .1 of another shape"):
        checkpoints.verify_checkpoint(TINY, reshaped)


def test_model_load_reports_wrong_variant(sam2_checkpoint):
    from sst_desktop.engine import sam2_model

    with pytest.raises(CheckpointError, match="does not fit model sam2.1_hiera_small"):
        sam2_model.get_model("sam2.1_hiera_small", device="cpu", checkpoint=sam2_checkpoint)


def test_terminal_progress_plain_lines():
    out = io.StringIO()
    report = checkpoints.terminal_progress("sam2.1_hiera_tiny.pt", stream=out)
    total = 50_000_000
    for done in range(0, total + 1, 1_000_000):
        report(done, total)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("0%") and lines[-1].endswith("100%")
    assert len(lines) == 11  # one per 10 %
    assert "50.0/50.0 MB" in lines[-1]


def test_shape_only_build_does_not_leak_to_other_threads():
    import torch
    from torch import nn

    original = nn.Module.register_parameter
    other = {}
    with checkpoints._built_on_meta_device():
        here = nn.Linear(3, 2)
        schedule = torch.linspace(0, 0.1, 3)  # a value the build reads stays readable
        thread = threading.Thread(target=lambda: other.setdefault("layer", nn.Linear(3, 2)))
        thread.start()
        thread.join()
    assert here.weight.device.type == "meta"
    assert schedule.device.type == "cpu" and schedule[1].item() == pytest.approx(0.05)
    assert other["layer"].weight.device.type == "cpu"
    assert nn.Linear(3, 2).weight.device.type == "cpu"  # nothing left behind after the build
    assert nn.Module.register_parameter is original
    assert nn.Linear(3, 2).weight.device.type == "cpu"
