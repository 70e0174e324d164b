"""Hostile or faulty files and arguments: each is refused with one clear line, nothing hangs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from _project_helpers import ROWS, TEMPLATE, make_dataset, write_csv
from _run_helpers import make_project, run_cli
from PIL import Image

from sst_desktop import fileio
from sst_desktop.data import table
from sst_desktop.data.images import image_size, load_image
from sst_desktop.data.masks import read_mask, write_mask
from sst_desktop.data.project import Project, mask_file_name, validate_config
from sst_desktop.data.spec import load_spec
from sst_desktop.engine.checkpoints import find_checkpoint
from sst_desktop.errors import ImageError, MaskError, SpecError, UserError
from sst_desktop.run.runner import RunOptions, plan_run, run_inference, select_groups

DEAD_CHECKPOINT = Path("/nonexistent/sam2.1_hiera_tiny.pt")  # plans and dry runs never load it


def _one_line(text: str) -> None:
    lines = [line for line in text.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and "Traceback" not in text, text


def _png_header_only(path: Path, width: int, height: int, bit_depth: int = 16) -> Path:
    """A PNG whose header claims width x height grey pixels, followed by a few bytes of data:
    decoding it would fail as truncated, so a size error proves the header was checked first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


# -- item: --view --out must never replace a project mask; resume checks what it skips


def test_view_out_refuses_mask_folders_and_masks(tmp_path):
    spec = make_project(tmp_path, DEAD_CHECKPOINT, references={"a": 2})
    pred = spec.parent / "pred_masks" / "a2.png"
    size = image_size(tmp_path / "images" / "a2.png")
    write_mask(pred, np.ones((size[1], size[0]), np.uint8))
    before = pred.read_bytes()
    ref = spec.parent / "ref_masks" / "a1.png"
    for out in (pred, spec.parent / "pred_masks" / "new.png", spec.parent / "ref_masks" / "o.png"):
        done = run_cli("--view", str(pred), "--out", str(out))
        assert done.returncode == 2, done.stdout
        _one_line(done.stderr)
        assert "mask" in done.stderr
    other_mask = tmp_path / "copy.png"
    other_mask.write_bytes(ref.read_bytes())  # an ID mask outside a project folder
    done = run_cli("--view", str(pred), "--out", str(other_mask))
    assert done.returncode == 2 and "single-channel" in done.stderr
    assert pred.read_bytes() == before and other_mask.read_bytes() == ref.read_bytes()
    assert not (spec.parent / "pred_masks" / "new.png").exists()
    ok = run_cli("--view", str(pred), "--out", str(tmp_path / "overlay.png"))
    assert ok.returncode == 0, ok.stderr
    with Image.open(tmp_path / "overlay.png") as im:
        assert im.mode == "RGB"


def test_resume_predicts_again_what_is_no_valid_id_mask(tmp_path):
    spec = make_project(tmp_path, DEAD_CHECKPOINT)
    pred_dir = spec.parent / "pred_masks"
    good = image_size(tmp_path / "images" / "a1.png")
    write_mask(pred_dir / "a1.png", np.ones((good[1], good[0]), np.uint8))  # valid
    Image.new("RGB", image_size(tmp_path / "images" / "a2.png"), "red").save(pred_dir / "a2.png")
    write_mask(pred_dir / "a3.png", np.ones((5, 5), np.uint8))  # wrong size
    (pred_dir / "a4.png").write_bytes(b"not a png")
    plan = plan_run(Project.open(spec), RunOptions(groups=["set=a"]))[0]
    assert plan.existing == ["a1"]
    assert [f.pk for f in plan.targets] == ["a2", "a3", "a4"]
    reasons = dict(plan.invalid)
    assert "RGB" in reasons["a2"] and "5x5" in reasons["a3"] and "cannot be read" in reasons["a4"]


# -- item: decompression bombs among masks are refused from the header


def test_a_huge_mask_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = _png_header_only(tmp_path / "ref_masks" / "a1.png", 19500, 19500)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(MaskError, match="19500x19500 but its image is 64x48"):
        read_mask(bomb, expected_size=(64, 48))
    with pytest.raises(MaskError, match=r"19500x19500 \(380 MP\), over the 200 MP"):
        read_mask(bomb)  # no image to compare with (the server's coloured masks)
    monkeypatch.setenv("SST_DESKTOP_MAX_IMAGE_PIXELS", "400000000")
    with pytest.raises(MaskError, match="truncated|cannot|Cannot"):
        read_mask(bomb)  # over our limit no more: now it is decoded, and found truncated


def test_dry_run_reports_a_mask_bomb_as_one_problem(tmp_path):
    spec = make_project(tmp_path, DEAD_CHECKPOINT)
    _png_header_only(spec.parent / "ref_masks" / "a0.png", 19500, 19500)
    done = run_cli("--infer", str(spec), "--dry-run")
    assert done.returncode == 1
    assert "a0.png is 19500x19500 but its image is 72x56" in done.stdout
    assert "Traceback" not in done.stderr


# -- item: a FIFO (or socket, device) as an image or mask


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_images_and_masks_are_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for read in (image_size, load_image):
        with pytest.raises(ImageError, match="is a FIFO"):
            read(fifo)
    with pytest.raises(MaskError, match="is a FIFO"):
        read_mask(fifo)
    with pytest.raises(UserError, match="FIFO"):
        table.read_csv(fifo)

    spec = make_project(tmp_path / "p", DEAD_CHECKPOINT)
    image = tmp_path / "p" / "images" / "a2.png"
    image.unlink()
    os.mkfifo(image)
    done = run_cli("--infer", str(spec), "--dry-run", timeout=120)  # hung forever before
    assert done.returncode == 1
    assert f"Image path {image} is a FIFO (named pipe)" in done.stdout


def test_special_file_kind():
    assert fileio.special_file_kind(__file__) is None
    assert fileio.special_file_kind(os.path.dirname(__file__)) is None
    assert fileio.special_file_kind("/nonexistent") is None
    if os.path.exists("/dev/null"):
        assert fileio.special_file_kind("/dev/null") == "a device"


# -- item: creating projects at once


def _create_many(n: int, **kwargs) -> tuple[list, list]:
    results, errors = [], []
    barrier = threading.Barrier(n)

    def create():
        barrier.wait()
        try:
            results.append(Project.create(**kwargs))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


def test_parallel_creates_with_one_name_get_their_own_folders(tmp_path):
    csv_path, image_root = make_dataset(tmp_path)
    kwargs = {
        "name": "same",
        "csv_path": csv_path,
        "primary_key": "pk",
        "img_path": TEMPLATE,
        "image_root": image_root,
        "group_by": ["Dataset"],
    }
    results, errors = _create_many(16, **kwargs)
    assert errors == []
    roots = sorted(str(p.root) for p in results)
    assert len(set(roots)) == 16
    for project in results:
        assert Project.open(project.spec_path).root == project.root

    chosen = tmp_path / "chosen"
    results, errors = _create_many(8, folder=chosen, **kwargs)
    assert len(results) == 1 and len(errors) == 7
    assert all(isinstance(e, UserError) and "already has spec.json" in str(e) for e in errors)
    assert Project.open(chosen / "spec.json").root == chosen
    assert json.loads((chosen / "spec.json").read_text())["primary_key"] == "pk"


# -- item: a typo in the spec's root


def test_a_missing_root_is_a_spec_error_and_creates_nothing(tmp_path):
    spec = make_project(tmp_path, DEAD_CHECKPOINT)
    data = json.loads(spec.read_text())
    data["root"] = str(tmp_path / "proj-typo")
    spec.write_text(json.dumps(data))
    with pytest.raises(SpecError, match="key 'root': project folder .*proj-typo does not exist"):
        load_spec(spec)
    done = run_cli("--infer", str(spec))
    assert done.returncode == 2
    _one_line(done.stderr)
    assert "proj-typo" in done.stderr and not (tmp_path / "proj-typo").exists()


# -- item: group labels that collide


def test_empty_and_none_values_are_different_groups_and_ambiguous_labels_are_refused(tmp_path):
    rows = [*ROWS[:2], ("n1", "none", "dorsal", "img_07"), ("e1", "", "dorsal", "img_08")]
    df = table.read_csv(write_csv(tmp_path / "g.csv", rows))
    labels = [g.label for g in table.group_rows(df, ["Dataset"])]
    assert labels == ["Dataset=beetles", "Dataset=none", "Dataset=(empty)"]
    assert len(set(labels)) == 3

    # Values can still spell one label two ways: such a label is refused with both keys.
    columns = ["pk", "A", "B", "Image_name"]
    rows = [("p1", "1, B=2", "3", "i1"), ("p2", "1", "2, B=3", "i2")]
    csv_path = write_csv(tmp_path / "amb" / "a.csv", rows, columns=columns)
    for row in rows:
        Image.new("RGB", (20, 16)).save(tmp_path / "amb" / f"{row[3]}.jpg")
    project = Project.create(
        "amb", csv_path, "pk", "{Image_name}.jpg", None, ["A", "B"], folder=tmp_path / "ap"
    )
    groups = project.groups()
    assert groups[0].label == groups[1].label == "A=1, B=2, B=3"
    with pytest.raises(UserError, match=f"names 2 groups \\({groups[0].key}, {groups[1].key}\\)"):
        select_groups(project, ["A=1, B=2, B=3"])
    with pytest.raises(UserError, match="names 2 groups"):
        project.group("A=1, B=2, B=3")
    assert select_groups(project, [groups[1].key]) == [groups[1]]


# -- item: deeply nested JSON


def test_a_deeply_nested_spec_is_one_line_exit_2(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('{"primary_key": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SpecError, match="nests lists or objects too deeply"):
        load_spec(spec)
    done = run_cli("--infer", str(spec), "--dry-run")
    assert done.returncode == 2
    _one_line(done.stderr)


# -- item: --serve --port out of range


def test_port_out_of_range_is_a_usage_error(tmp_path):
    for port in ("99999", "-1", "http"):
        done = run_cli("--serve", "--port", port)
        assert done.returncode == 2, done.stderr
        _one_line(done.stderr)
        assert "--port" in done.stderr


# -- item: CSV error rows are spreadsheet rows


def test_csv_parse_errors_name_spreadsheet_rows(tmp_path):
    quote = tmp_path / "q.csv"
    quote.write_text('id,file\na,1\nb,2\nc,3\nd,4\n"e,5\nf,6\n', encoding="utf-8")
    with pytest.raises(UserError, match="a quote opened on row 6 is never closed"):
        table.read_csv(quote)
    wide = tmp_path / "w.csv"
    wide.write_text('id,file\na,"x\ny"\nb,2,3\n', encoding="utf-8")
    with pytest.raises(UserError, match="row 3 has 3 fields where the header has 2"):
        table.read_csv(wide)


# -- item: stale temp files everywhere in the project


def test_a_run_cleans_dead_writers_temp_files_in_every_project_folder(tmp_path):
    spec = make_project(tmp_path, DEAD_CHECKPOINT, references={})  # no model needed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    tag = f"p{int(dead.stdout)}-h{fileio.host_tag()}"
    stale = [
        spec.parent / sub / f".x.png.{tag}.abc.tmp" for sub in ("ref_masks", "pred_masks", "runs")
    ]
    stale.append(spec.parent / f".spec.json.{tag}.abc.tmp")
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    run_inference(Project.open(spec), RunOptions())
    assert [p for p in stale if p.exists()] == []


# -- smaller ones


def test_one_primary_key_length_rule(tmp_path):
    long_ok = "k" * 230  # a 234-byte file name: allowed by the file rule, so by validation too
    too_long = "k" * 240
    assert mask_file_name(long_ok) == long_ok + ".png"
    with pytest.raises(UserError, match="too long"):
        mask_file_name(too_long)
    rows = [(long_ok, "beetles", "dorsal", "img_01"), ("b2", "beetles", "dorsal", "img_02")]
    csv_path, image_root = make_dataset(tmp_path, rows)
    assert validate_config(csv_path, "pk", TEMPLATE, image_root, ["Dataset"]).ok
    rows[0] = (too_long, *rows[0][1:])
    write_csv(csv_path, rows)
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, ["Dataset"])
    assert not report.ok and any("longer than 240 bytes" in e for e in report.errors)


def test_a_checkpoint_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(UserError, match="is a folder: choose the .pt file inside it"):
        find_checkpoint("sam2.1_hiera_tiny", explicit=tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        find_checkpoint("sam2.1_hiera_tiny", explicit=tmp_path / "gone.pt")
