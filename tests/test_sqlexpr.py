"""Tests for the whitelisted SQL string expressions (img_path) and row filters (filter_query)."""

from __future__ import annotations

import pandas as pd
import pytest

from sst_desktop.data.sqlexpr import SqlExpressionError, parse_expression, parse_filter
from sst_desktop.errors import UserError

ROW = {"filepath": "images/erato/E_01.jpg", "Dataset": "Heliconius", "View": "", "n": "12"}
COLUMNS = list(ROW)


def value(text: str, row: dict[str, str] = ROW):
    return parse_expression(text, COLUMNS).evaluate(row)


def test_original_sst_gui_example_expression():
    expr = parse_expression(
        "CONCAT('/local/scratch/datasets/jiggins/butterflies', RIGHT(filepath, LEN(filepath) - 6))",
        COLUMNS,
    )
    assert expr.columns == ["filepath"]
    assert expr.render(ROW) == "/local/scratch/datasets/jiggins/butterflies/erato/E_01.jpg"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'a/' || Dataset || '/' || filepath", "a/Heliconius/images/erato/E_01.jpg"),
        ("concat(Dataset, '-', n)", "Heliconius-12"),
        ("LEFT(Dataset, 3)", "Hel"),
        ("LEFT(Dataset, -3)", "Helicon"),
        ("RIGHT(Dataset, 3)", "ius"),
        ("RIGHT(Dataset, -3)", "iconius"),
        ("SUBSTR(Dataset, 2, 3)", "eli"),
        ("SUBSTRING(Dataset, 5)", "conius"),
        ("SUBSTRING(Dataset FROM 0 FOR 3)", "He"),
        ("LENGTH(Dataset)", 10),
        ("LEN(filepath) - 6", 15),
        ("(LEN(Dataset) + 2) * 3", 36),
        ("-LEN(Dataset)", -10),
        ("REPLACE(filepath, 'images/', 'jpg/')", "jpg/erato/E_01.jpg"),
        ("LOWER(Dataset) || UPPER('x')", "heliconiusX"),
        ("TRIM('  a b  ')", "a b"),
        ("\"Dataset\" || '.png'", "Heliconius.png"),
        ("dataset || ''", "Heliconius"),  # unquoted names match regardless of case, as in DuckDB
        ("'it''s'", "it's"),
    ],
)
def test_whitelisted_functions(text, expected):
    assert value(text) == expected


def test_an_empty_cell_is_null():
    assert value("View || 'x'") is None  # || with NULL is NULL
    assert value("CONCAT('a', View, 'b')") == "ab"  # CONCAT skips NULLs
    assert parse_expression("View || 'x'", COLUMNS).render(ROW) == ""  # a blank path


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("read_csv('/etc/passwd')", "READ_CSV"),
        ("md5(Dataset)", "MD5"),
        ("regexp_replace(Dataset, 'a', 'b')", "REGEXP_REPLACE"),
        ("CAST(n AS INTEGER)", "CAST"),
        ("LEN(Dataset) / 2", "/"),
        ("(SELECT 1)", "a subquery"),
        ("getenv('HOME') || 'x'", "GETENV"),
    ],
)
def test_anything_else_is_refused_naming_it(text, name):
    with pytest.raises(SqlExpressionError) as info:
        parse_expression(text, COLUMNS)
    message = str(info.value)
    assert f"uses {name}, which SST Desktop does not evaluate" in message
    assert "\n" not in message and isinstance(info.value, UserError)


def test_unknown_column_and_syntax_errors_are_one_line():
    with pytest.raises(SqlExpressionError, match=r"uses column 'Folder', which is not in the CSV"):
        parse_expression("'x/' || Folder", COLUMNS)
    with pytest.raises(SqlExpressionError, match=r"is not valid SQL \(incomplete expression"):
        parse_expression("'x/' ||", COLUMNS)
    with pytest.raises(SqlExpressionError, match="needs a whole number, got 'Heliconius'"):
        value("LEFT(filepath, Dataset)")


FRAME = pd.DataFrame(
    {
        "pk": ["a", "b", "c", "d", "e"],
        "View": ["dorsal", "ventral", "", "dorsal", "Dorsal"],
        "Year": ["1999", "2005", "2010", "x", "2001"],
    }
)


@pytest.mark.parametrize(
    ("where", "keep"),
    [
        ("", ["a", "b", "c", "d", "e"]),
        ("WHERE View = 'dorsal'", ["a", "d"]),
        ("WHERE View <> 'dorsal'", ["b", "e"]),  # NULL <> 'dorsal' is unknown: not kept
        ("WHERE View != 'dorsal' OR View IS NULL", ["b", "c", "e"]),
        ("WHERE View IS NOT NULL AND NOT View = 'dorsal'", ["b", "e"]),
        ("WHERE View IN ('ventral', 'Dorsal')", ["b", "e"]),
        ("WHERE View NOT IN ('ventral', 'Dorsal')", ["a", "d"]),
        ("WHERE View LIKE 'd%'", ["a", "d"]),
        ("WHERE View ILIKE 'd%'", ["a", "d", "e"]),
        ("WHERE View LIKE '_orsal'", ["a", "d", "e"]),
        ("WHERE Year >= 2001", ["b", "c", "e"]),  # a cell compared with a number is a number
        ("WHERE Year < '2005'", ["a", "e"]),  # text with text: text order ('x' is after digits)
        ("WHERE (Year > 2000 AND View = 'dorsal') OR pk = 'a'", ["a"]),
        ("WHERE LOWER(View) = 'dorsal' AND LEN(pk) = 1", ["a", "d", "e"]),
    ],
)
def test_filter(where, keep):
    query = f"SELECT * FROM master_df {where}".strip()
    rows = parse_filter(query, list(FRAME.columns)).keep(FRAME)
    assert FRAME["pk"].iloc[rows].tolist() == keep


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("SELECT pk FROM master_df", "is not a plain row filter"),
        ("SELECT * FROM master_df LIMIT 3", r"is not a plain row filter \(it has LIMIT\)"),
        ("SELECT * FROM master_df ORDER BY pk", r"\(it has ORDER\)"),
        ("SELECT * FROM other_df", "is not a plain row filter"),
        ("DELETE FROM master_df", "is not a SELECT"),
        ("SELECT * FROM master_df; DROP TABLE master_df", "must be a single SQL expression"),
        ("SELECT * FROM master_df WHERE Year BETWEEN 1 AND 2", "uses BETWEEN"),
        ("SELECT * FROM master_df WHERE pk IN (SELECT pk FROM master_df)", "uses a subquery"),
        ("SELECT * FROM master_df WHERE regexp_matches(pk, 'a')", "uses REGEXP_MATCHES"),
        ("SELECT * FROM master_df WHERE Colour = 'red'", "uses column 'Colour'"),
    ],
)
def test_filter_refusals(query, match):
    with pytest.raises(SqlExpressionError, match=match):
        parse_filter(query, list(FRAME.columns))
