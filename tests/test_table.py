"""CSV reading, image-path templates, primary keys and groups (sst_desktop.data.table)."""

from __future__ import annotations

import pytest

from sst_desktop.data import table
from sst_desktop.errors import UserError
from tests._project_helpers import COLUMNS, ROWS, write_csv


def test_reads_every_column_as_string_and_strips_header(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(" id ,count , NA\n007,1.50,NA\n008,,null\n", encoding="utf-8")
    df = table.read_csv(path)
    assert list(df.columns) == ["id", "count", "NA"]
    assert df["id"].tolist() == ["007", "008"]  # leading zeros kept: not parsed as numbers
    assert df["count"].tolist() == ["1.50", ""]
    assert df["NA"].tolist() == ["NA", "null"]  # no NaN guessing


def test_accepts_utf8_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,name\n1,Käfer\n".encode())
    df = table.read_csv(path)
    assert list(df.columns) == ["id", "name"]
    assert df["name"].tolist() == ["Käfer"]


def test_non_utf8_csv_names_file_and_fix(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("id,name\n1,K\u00e4fer\n".encode("latin-1"))
    with pytest.raises(UserError) as info:
        table.read_csv(path)
    message = str(info.value)
    assert str(path) in message and "UTF-8" in message and "line 2" in message
    assert "\n" not in message


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_csv(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is empty"):
        table.read_csv(path)


def test_header_only_csv_gives_zero_rows(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("id,name\n")
    df = table.read_csv(path)
    assert list(df.columns) == ["id", "name"] and len(df) == 0


def test_duplicate_column_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("id, name,name\n1,a,b\n")
    with pytest.raises(UserError, match=r"duplicate column names \('name'\)"):
        table.read_csv(path)


def test_blank_column_name(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("id,,x\n1,2,3\n")
    with pytest.raises(UserError, match="column 2 of the header"):
        table.read_csv(path)


def test_rows_with_extra_fields(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text("id,name\n1,a,EXTRA\n2,b,EXTRA\n")
    with pytest.raises(UserError, match="more fields than the header .first on line 2"):
        table.read_csv(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        table.read_csv(tmp_path / "nope.csv")


def test_folder_instead_of_csv_says_so(tmp_path):
    # A folder typed or picked as the CSV: "does not exist" would be wrong and confusing.
    with pytest.raises(UserError, match=r"is a folder: choose the \.csv file inside it"):
        table.read_csv(tmp_path)


def test_column_name_image_path():
    t = table.parse_image_path("path", ["id", "path"])
    assert t.columns == ["path"]
    assert t.render({"path": "a/b.jpg"}) == "a/b.jpg"


def test_template_image_path():
    t = table.parse_image_path("{Dataset}/{Image_name}.JPG", COLUMNS)
    assert t.columns == ["Dataset", "Image_name"]
    assert t.render({"Dataset": "d", "Image_name": "x"}) == "d/x.JPG"
    # Doubled braces are literal braces.
    assert (
        table.parse_image_path("{{{Dataset}}}.png", COLUMNS).render({"Dataset": "d"}) == "{d}.png"
    )


def test_template_with_empty_leading_value_stays_relative():
    t = table.parse_image_path("{Dataset}/{Image_name}.jpg", COLUMNS)
    assert t.render({"Dataset": "", "Image_name": "x"}) == "x.jpg"
    assert t.render({"Dataset": "/data", "Image_name": "x"}) == "/data/x.jpg"


@pytest.mark.parametrize(
    "bad, expected",
    [
        ("{Nope}/{Image_name}.jpg", "uses column 'Nope'"),
        ("{Dataset.upper}.jpg", "not a plain column name|uses column"),
        ("{Dataset[0]}.jpg", "not a plain column name|uses column"),
        ("{Dataset!r}.jpg", "not a plain column name"),
        ("{Dataset:>10}.jpg", "not a plain column name"),
        ("{}.jpg", "not a plain column name"),
        ("{Dataset.jpg", "malformed"),
        ("no_such_column", "not a column"),
        ("", "empty"),
    ],
)
def test_bad_image_paths(bad, expected):
    with pytest.raises(UserError, match=expected) as info:
        table.parse_image_path(bad, COLUMNS, source="meta.csv")
    if expected in ("not a column", "uses column 'Nope'"):
        assert "'Image_name'" in str(info.value)  # lists the columns


def test_template_is_never_evaluated():
    # Attribute access in a template must not reach Python objects.
    with pytest.raises(UserError):
        table.parse_image_path("{Dataset.__class__}", COLUMNS)
    # A column whose name has a dot is looked up by its exact name, never as an attribute.
    t = table.parse_image_path("{img.name}.png", ["img.name"])
    assert t.render({"img.name": "x"}) == "x.png"


def test_resolve_image_path(tmp_path):
    assert table.resolve_image_path("a/b.jpg", tmp_path) == tmp_path / "a" / "b.jpg"
    assert (
        table.resolve_image_path(str(tmp_path / "x.jpg"), tmp_path / "other") == tmp_path / "x.jpg"
    )


def test_primary_key_duplicates_with_spreadsheet_rows(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("a", "", "", ""), ("b", "", "", ""), ("a", "", "", "")])
    df = table.read_csv(path)
    assert table.duplicate_keys(df, "pk") == [("a", [2, 4])]
    with pytest.raises(UserError) as info:
        table.check_primary_key(df, "pk", source=path)
    assert "'a' (rows 2, 4)" in str(info.value) and "header = row 1" in str(info.value)


def test_primary_key_blank_and_missing(tmp_path):
    path = write_csv(tmp_path / "b.csv", [("a", "", "", ""), (" ", "", "", "")])
    df = table.read_csv(path)
    assert table.blank_key_rows(df, "pk") == [3]
    with pytest.raises(UserError, match=r"blank on 1 row\(s\) \(rows 3"):
        table.check_primary_key(df, "pk", source=path)
    with pytest.raises(UserError, match="Primary key column 'id' is not in"):
        table.check_primary_key(df, "id", source=path)


def test_groups_by_first_appearance_rows_in_csv_order(tmp_path):
    df = table.read_csv(write_csv(tmp_path / "g.csv", ROWS))
    groups = table.group_rows(df, ["Dataset"])
    assert [g.label for g in groups] == ["Dataset=beetles", "Dataset=moths", "Dataset=(empty)"]
    assert [g.indices for g in groups] == [[0, 1, 3], [2, 4], [5]]
    two = table.group_rows(df, ["Dataset", "View"])
    assert two[0].label == "Dataset=beetles, View=dorsal"
    assert two[0].values == {"Dataset": "beetles", "View": "dorsal"}


def test_no_group_by_is_one_group(tmp_path):
    df = table.read_csv(write_csv(tmp_path / "g.csv", ROWS))
    (only,) = table.group_rows(df, [])
    assert only.key == table.ALL_GROUP_KEY and only.label == "all images"
    assert only.indices == list(range(len(ROWS)))


def test_group_keys_stable_across_reordering_and_safe(tmp_path):
    df = table.read_csv(write_csv(tmp_path / "a.csv", ROWS))
    shuffled = table.read_csv(write_csv(tmp_path / "b.csv", list(reversed(ROWS))))
    keys = {g.label: g.key for g in table.group_rows(df, ["Dataset", "View"])}
    keys2 = {g.label: g.key for g in table.group_rows(shuffled, ["Dataset", "View"])}
    assert keys == keys2
    assert len(set(keys.values())) == len(keys)
    for key in keys.values():
        assert key and all(c.isalnum() or c == "-" for c in key)
    assert keys["Dataset=beetles, View=dorsal"].startswith("beetles-dorsal-")


def test_group_keys_distinguish_values_with_same_slug():
    a = table.group_key(["D"], ["Käfer/1"])
    b = table.group_key(["D"], ["kafer 1"])
    assert a != b
    assert table.group_key(["D"], ["Käfer/1"]) == a
    assert table.group_key(["D"], ["???"]).startswith("g-")


def test_unreadable_csv_is_a_user_error(tmp_path, monkeypatch):
    from pathlib import Path

    path = write_csv(tmp_path / "meta.csv", ROWS)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match=r"meta\.csv cannot be read \(Permission denied\)"):
        table.read_csv(path)
