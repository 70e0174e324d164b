"""`--check`: a project's images and masks side by side in a terminal (no display needed).

Pictures are drawn with the Unicode upper-half block "▀": each character cell shows two pixels
stacked, the top one as the foreground colour and the bottom one as the background colour, with
24-bit colour escape codes (`SST_DESKTOP_TERM_COLORS=256` switches to the 256-colour palette for
terminals without true colour). That needs no library and no graphics protocol, so it works in any
modern terminal, over ssh and inside tmux or screen, where image protocols (sixel, kitty, iTerm2)
often do not pass.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from PIL import Image

from sst_desktop.data.images import load_image
from sst_desktop.data.masks import object_ids, read_mask
from sst_desktop.data.palette import colorize
from sst_desktop.data.project import Project
from sst_desktop.errors import UserError

HALF_BLOCK = "\u2580"  # upper half block: foreground = top pixel, background = bottom pixel
RESET = "\x1b[0m"
COLORS_ENV = "SST_DESKTOP_TERM_COLORS"
DEFAULT_COLUMNS = 100  # when the output is not a terminal
MAX_ROWS = 30  # text rows per picture (60 pixels high), so a frame fits on a screen
GAP = 2  # columns between the image and its mask
MAX_MATCHES = 20  # frames shown for one partial key
FAILING_HEADER = "Failing primary keys ("  # how a dry run introduces its list of keys


@dataclass(frozen=True)
class Match:
    """The frames one key given by the user matched."""

    key: str
    pks: list[str]
    more: int = 0  # further matches not shown


def resolve_keys(keys: Sequence[str], pks: Sequence[str]) -> tuple[list[Match], list[str]]:
    """Frames each key names: the exact key, else every key starting with it, else every key
    containing it, both ignoring letter case (in CSV order). Returns matches and unmatched keys."""
    lowered = [(pk, pk.lower()) for pk in pks]
    exact = set(pks)
    matches, missing = [], []
    for key in keys:
        if key in exact:
            matches.append(Match(key, [key]))
            continue
        k = key.lower()
        found = [pk for pk, low in lowered if low.startswith(k)] or [
            pk for pk, low in lowered if k in low
        ]
        if not found:
            missing.append(key)
            continue
        matches.append(Match(key, found[:MAX_MATCHES], max(0, len(found) - MAX_MATCHES)))
    return matches, missing


def truecolor() -> bool:
    """24-bit colour unless `SST_DESKTOP_TERM_COLORS=256` asks for the 256-colour palette."""
    return os.environ.get(COLORS_ENV, "").strip() != "256"


def _ansi256(rgb: np.ndarray) -> np.ndarray:
    """Nearest xterm-256 colour-cube index (16..231) of each RGB pixel."""
    steps = np.array([0, 95, 135, 175, 215, 255])
    idx = np.abs(rgb[..., None].astype(np.int16) - steps).argmin(axis=-1)
    return 16 + 36 * idx[..., 0] + 6 * idx[..., 1] + idx[..., 2]


def half_block_lines(rgb: np.ndarray, *, true_colour: bool = True) -> list[str]:
    """Text lines drawing an (H, W, 3) uint8 picture, two pixel rows per line."""
    height, width = rgb.shape[:2]
    if height % 2:  # the last line's lower half repeats the last row
        rgb = np.concatenate([rgb, rgb[-1:]], axis=0)
    codes = rgb if true_colour else _ansi256(rgb)
    lines = []
    for y in range(0, rgb.shape[0], 2):
        parts, previous = [], None
        for x in range(width):
            top, bottom = codes[y, x], codes[y + 1, x]
            key = (tuple(np.atleast_1d(top)), tuple(np.atleast_1d(bottom)))
            if key != previous:  # only colour changes cost escape codes
                parts.append(_colour(top, bottom, true_colour))
                previous = key
            parts.append(HALF_BLOCK)
        lines.append("".join(parts) + RESET)
    return lines


def _colour(top: Any, bottom: Any, true_colour: bool) -> str:
    if true_colour:
        return (
            f"\x1b[38;2;{top[0]};{top[1]};{top[2]}m\x1b[48;2;{bottom[0]};{bottom[1]};{bottom[2]}m"
        )
    return f"\x1b[38;5;{int(top)}m\x1b[48;5;{int(bottom)}m"


def side_by_side(image: Image.Image, mask: np.ndarray, columns: int) -> np.ndarray:
    """The photo and its coloured mask (black background) next to each other, as one RGB array
    `columns` pixels wide at most and MAX_ROWS * 2 pixels high at most."""
    panel_w = max(4, (columns - GAP) // 2)
    scale = min(panel_w / image.width, MAX_ROWS * 2 / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    photo = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BOX))
    small = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    colours = colorize(small)[..., :3].copy()
    colours[small == 0] = 0
    gap = np.zeros((size[1], GAP, 3), np.uint8)
    return np.concatenate([photo, gap, colours], axis=1)


def check(
    spec_path: str,
    keys: Sequence[str],
    *,
    pred_only: bool = False,
    out: TextIO | None = None,
    columns: int | None = None,
) -> int:
    """Draw each matched frame's image and mask (its prediction, else its reference unless
    `pred_only`); returns 0 when every key matched a frame with a mask, else 1."""
    out = out or sys.stdout
    if columns is None:
        columns = shutil.get_terminal_size((DEFAULT_COLUMNS, 24)).columns
    project = Project.open(spec_path)
    matches, missing = resolve_keys(keys, [f.pk for f in project.frames()])
    colour = truecolor()
    problems = len(missing)
    for key in missing:
        print(f"{key}: no primary key matches (exact, prefix or part, any letter case)", file=out)
    frames = list(dict.fromkeys(pk for m in matches for pk in m.pks))
    for match in matches:
        if match.more:
            print(f"{match.key}: {match.more} more frame(s) match; showing {MAX_MATCHES}", file=out)
    for index, pk in enumerate(frames, start=1):
        frame = project.frame(pk)
        kinds = [("pred", project.pred_mask_path(pk))]
        if not pred_only:
            kinds.append(("ref", project.ref_mask_path(pk)))
        found = [(kind, path) for kind, path in kinds if path.is_file()]
        if not found:
            what = "prediction" if pred_only else "prediction or reference"
            print(f"[{index}/{len(frames)}] {pk}: no {what} mask", file=out)
            problems += 1
            continue
        kind, path = found[0]
        try:
            image = load_image(frame.image_path)
            mask = read_mask(path, expected_size=image.size)
        except UserError as exc:
            print(f"[{index}/{len(frames)}] {pk}: {exc}", file=out)
            problems += 1
            continue
        ids = " ".join(map(str, object_ids(mask))) or "none"
        print(f"[{index}/{len(frames)}] {pk} ({kind}, IDs {ids}): {frame.image_path}", file=out)
        for line in half_block_lines(side_by_side(image, mask, columns), true_colour=colour):
            print(line, file=out)
    return 1 if problems else 0


def keys_from_stdin(stream: TextIO | None = None) -> list[str]:
    """Non-blank lines of standard input, e.g. the keys a dry run printed."""
    stream = stream or sys.stdin
    if stream.isatty():
        raise UserError(
            "--check needs primary keys: give them after the spec, or pipe them in, e.g. "
            "`sst-desktop --infer SPEC --dry-run | sst-desktop --check SPEC`"
        )
    lines = [line.strip() for line in stream.read().splitlines() if line.strip()]
    # A dry run's whole report piped in: only the keys after its "Failing primary keys" line.
    for index, line in enumerate(lines):
        if line.startswith(FAILING_HEADER):
            return lines[index + 1 :]
    return lines
