"""The command line's argument types: the value, or one line saying what the word should be."""

from __future__ import annotations

import argparse

import pytest

from sst_desktop.cli_args import fraction, port, positive_int


def test_values_within_their_range_come_back_converted():
    assert positive_int("3") == 3
    assert port("0") == 0 and port("65535") == 65535
    assert fraction("0") == 0.0 and fraction("0.25") == 0.25 and fraction("1") == 1.0


@pytest.mark.parametrize(
    ("convert", "text", "message"),
    [
        (positive_int, "two", "'two' is not a whole number"),
        (positive_int, "0", "'0' must be 1 or more"),
        (port, "http", "'http' is not a port number"),
        (port, "70000", "'70000' must be from 0 to 65535 (0 = a free port)"),
        (fraction, "half", "'half' is not a number"),
        (fraction, "1.5", "'1.5' must be between 0 and 1"),
    ],
)
def test_a_bad_word_gets_one_line_saying_what_it_should_be(convert, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        convert(text)
    assert str(caught.value) == message
