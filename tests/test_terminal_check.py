"""`--check`: frames drawn in the terminal with half blocks, keys matched loosely, no display."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from _run_helpers import REPO
from PIL import Image
from test_sstgui_compat import make_sstgui_folder

from sst_desktop.app import terminal
from sst_desktop.data.palette import colorize

CELL = re.compile(r"\x1b\[38;2;(\d+);(\d+);(\d+)m\x1b\[48;2;(\d+);(\d+);(\d+)m(\u2580+)")


def decode(lines: list[str]) -> np.ndarray:
    """The (2 * lines, width, 3) picture a list of half-block lines draws."""
    rows = []
    for line in lines:
        assert line.endswith(terminal.RESET)
        top, bottom = [], []
        for match in CELL.finditer(line):
            count = len(match.group(7))
            top += [tuple(map(int, match.groups()[:3]))] * count
            bottom += [tuple(map(int, match.groups()[3:6]))] * count
        assert len(top) == line.count(terminal.HALF_BLOCK)
        rows += [top, bottom]
    return np.array(rows, dtype=np.uint8)


def test_half_blocks_draw_every_pixel_exactly():
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    lines = terminal.half_block_lines(picture)
    assert len(lines) == 3
    back = decode(lines)
    np.testing.assert_array_equal(back[:5], picture)
    np.testing.assert_array_equal(back[5], picture[4])  # an odd last row fills both halves


def test_repeated_colours_cost_no_escape_codes():
    picture = np.zeros((2, 50, 3), np.uint8)
    (line,) = terminal.half_block_lines(picture)
    assert line == "\x1b[38;2;0;0;0m\x1b[48;2;0;0;0m" + terminal.HALF_BLOCK * 50 + terminal.RESET


def test_256_colour_mode(monkeypatch):
    monkeypatch.setenv("SST_DESKTOP_TERM_COLORS", "256")
    assert not terminal.truecolor()
    picture = np.array([[[255, 0, 0]], [[0, 0, 0]]], np.uint8)
    (line,) = terminal.half_block_lines(picture, true_colour=False)
    assert line == "\x1b[38;5;196m\x1b[48;5;16m" + terminal.HALF_BLOCK + terminal.RESET


def test_keys_match_exactly_then_by_prefix_then_by_part_ignoring_case():
    pks = ["HE_01", "HE_010", "he_02", "DA_01", "xHE_01"]
    matches, missing = terminal.resolve_keys(["HE_01", "he_01", "da", "_02", "zz"], pks)
    assert [(m.key, m.pks) for m in matches] == [
        ("HE_01", ["HE_01"]),  # exact wins
        ("he_01", ["HE_01", "HE_010"]),  # prefix, any case (not the one containing it)
        ("da", ["DA_01"]),
        ("_02", ["he_02"]),  # part of the key
    ]
    assert missing == ["zz"]


def test_keys_from_a_piped_dry_run_report():
    report = (
        "Checked 5 image(s)\nproblem: x\n2 problem(s)\nFailing primary keys (2):\nDA_02\nHE_03\n"
    )
    assert terminal.keys_from_stdin(io.StringIO(report)) == ["DA_02", "HE_03"]
    assert terminal.keys_from_stdin(io.StringIO("a\n\n b \n")) == ["a", "b"]


def _run_check(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "62"  # no terminal here: the width comes from COLUMNS
    env.pop("SST_DESKTOP_TERM_COLORS", None)
    return subprocess.run(
        [sys.executable, "-m", "sst_desktop", "--check", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_check_draws_image_and_mask_without_a_display(tmp_path):
    spec = make_sstgui_folder(tmp_path)
    result = _run_check(str(spec), stdin="he_01\n")  # keys from stdin, any case
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    image_path = tmp_path / "butterflies" / "Heliconius" / "HE_01.jpg"
    assert lines[0] == f"[1/1] HE_01 (ref, IDs 1 4): {image_path}"
    # 72x56 photo in a 30-column panel: 30x23 pixels, 12 text lines, 30 + 2 + 30 cells wide.
    picture = decode(lines[1:])
    assert len(lines) == 13 and picture.shape == (24, 62, 3)
    with Image.open(spec.parent / "ref_masks" / "HE_01.png") as im:
        small = np.asarray(im.resize((30, 23), Image.Resampling.NEAREST))
    expected = colorize(small)[..., :3].copy()
    expected[small == 0] = 0
    np.testing.assert_array_equal(picture[:23, 32:], expected)
    assert set(np.unique(small).tolist()) == {0, 1, 4}
    assert not picture[:23, 30:32].any()  # the gap


def test_check_pred_only_and_unknown_keys(tmp_path):
    spec = make_sstgui_folder(tmp_path)
    result = _run_check(str(spec), "HE_01", "HE_02", "nothing-like-it", "--pred-only")
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert (
        out[0] == "nothing-like-it: no primary key matches (exact, prefix or part, any letter case)"
    )
    assert out[1] == "[1/2] HE_01: no prediction mask"
    assert out[2].startswith("[2/2] HE_02 (pred, IDs 1 4): ")


@pytest.mark.parametrize("flag", ["--pred-only"])
def test_pred_only_needs_check(flag, capsys):
    from sst_desktop import cli

    assert cli.main([flag]) == 2
    assert "--pred-only needs --check SPEC [KEY ...]" in capsys.readouterr().err
