"""Progress bars on a terminal, drawn by tqdm and sized even where the terminal reports no size.

tqdm reads a terminal's size itself and keeps one column free; a terminal that reports 0 x 0
(a bare pseudo-terminal, a serial console, a container before its first resize) then gives it
-1 columns and -1 rows, and its display() treats the bar as below the last row and draws
nothing. So the size is read here, with a fallback, and handed to tqdm explicitly."""

from __future__ import annotations

import os
from typing import IO, Any

from tqdm import tqdm

# The shape a terminal that reports none is drawn for.
FALLBACK_SHAPE = (80, 24)


def terminal_shape(stream: IO[str]) -> tuple[int, int]:
    """(columns, rows) of the terminal behind `stream`; FALLBACK_SHAPE where it reports none."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor, or not a terminal
        return FALLBACK_SHAPE
    return columns or FALLBACK_SHAPE[0], rows or FALLBACK_SHAPE[1]


def terminal_bar(stream: IO[str], **options: Any) -> tqdm:
    """A tqdm bar on `stream`, sized by `terminal_shape`; `options` are tqdm's."""
    columns, rows = terminal_shape(stream)
    # The last column stays free, as tqdm's own sizing does.
    return tqdm(file=stream, ncols=columns - 1, nrows=rows, **options)


def fit_to_terminal(bar: tqdm, stream: IO[str]) -> None:
    """Resize `bar` to the terminal's current width (it may have changed since the last draw)."""
    columns, rows = terminal_shape(stream)
    bar.ncols, bar.nrows = columns - 1, rows
