"""Argument types of the `sst-desktop` command line: each turns a word into a checked value or
says in one line what is wrong with it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def _parse(text: str, convert: Callable[[str], T], noun: str) -> T:
    """`convert(text)`, or an argparse error saying `text` is not `noun`."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None


def positive_int(text: str) -> int:
    """A whole number of 1 or more."""
    value = _parse(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def port(text: str) -> int:
    """A TCP port; 0 asks for a free one."""
    value = _parse(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0 to 65535 (0 = a free port)")
    return value


def fraction(text: str) -> float:
    """A number from 0 to 1."""
    value = _parse(text, float, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value
