"""CSV field separators: `,` `;` tab and `|` are detected (European spreadsheet exports use `;`),
and a user's choice overrides the guess."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from sst_desktop.data import table
from sst_desktop.errors import UserError
from tests._project_helpers import make_dataset


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_each_delimiter_is_detected(tmp_path, sep):
    text = sep.join(["pk", "length_mm", "Image_name"]) + "\n"
    text += sep.join(["a1", '"1,5"' if sep == "," else "1,5", "img_01"]) + "\n"
    text += sep.join(["a2", '"2,25"' if sep == "," else "2,25", "img_02"]) + "\n"
    df = table.read_csv(_write(tmp_path / "t.csv", text))
    assert list(df.columns) == ["pk", "length_mm", "Image_name"]
    assert df["length_mm"].tolist() == ["1,5", "2,25"]  # decimal commas stay inside their field
    assert df.attrs["delimiter"] == sep


def test_semicolon_csv_with_a_bom_and_quotes(tmp_path):
    text = '\ufeffpk;name;path\nx1;"Danaus; plexippus";a.jpg\nx2;Vanessa;b.jpg\n'
    df = table.read_csv(_write(tmp_path / "eu.csv", text))
    assert df["name"].tolist() == ["Danaus; plexippus", "Vanessa"]


def test_an_explicit_delimiter_overrides_the_guess(tmp_path):
    path = _write(tmp_path / "t.csv", "a;b,c\n1;2,3\n")
    # A tie (two columns either way) goes to the comma; the user can say otherwise.
    assert list(table.read_csv(path).columns) == ["a;b", "c"]
    assert list(table.read_csv(path, delimiter=";").columns) == ["a", "b,c"]
    assert list(table.read_csv(path, delimiter="semicolon").columns) == ["a", "b,c"]
    with pytest.raises(
        UserError, match="delimiter ':' is not supported: use one of comma, semicolon"
    ):
        table.read_csv(path, delimiter=":")


def test_a_single_column_csv_stays_one_column(tmp_path):
    df = table.read_csv(_write(tmp_path / "one.csv", "pk\na\nb\n"))
    assert list(df.columns) == ["pk"] and df.attrs["delimiter"] == ","


def test_ragged_rows_name_the_delimiter(tmp_path):
    path = _write(tmp_path / "bad.csv", "a;b\n1;2\n3;4;5;6\n")
    with pytest.raises(UserError, match="semicolon"):
        table.read_csv(path, delimiter=";")


def test_a_semicolon_project_validates_and_finds_its_images(tmp_path):
    from sst_desktop.data.project import validate_config

    csv_path, image_root = make_dataset(tmp_path)
    semi = tmp_path / "semi.csv"
    semi.write_text(csv_path.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")
    report = validate_config(semi, "pk", "{Dataset}/{Image_name}.jpg", image_root, ["Dataset"])
    assert report.ok, report.errors
    assert report.images_found == 6 and report.images_missing == 0


def test_a_project_from_a_semicolon_csv_keeps_a_comma_separated_copy(tmp_path):
    from sst_desktop.data.project import Project

    csv_path, image_root = make_dataset(tmp_path)
    semi = tmp_path / "semi.csv"
    semi.write_text(csv_path.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")
    project = Project.create(
        "Semicolons", semi, "pk", "{Dataset}/{Image_name}.jpg", image_root, ["Dataset"],
        folder=tmp_path / "project",
    )  # fmt: skip
    master = tmp_path / "project" / "master.csv"
    assert master.read_text(encoding="utf-8") == csv_path.read_text(encoding="utf-8")
    reopened = Project.open(project.spec_path)
    assert [f.pk for f in reopened.frames()] == ["b1", "b2", "m1", "b3", "m2", "x1"]
    assert all(f.image_path.is_file() for f in reopened.frames())


def test_the_users_delimiter_wins_when_creating(tmp_path):
    from sst_desktop.data.project import Project, validate_config

    path = _write(tmp_path / "t.csv", "pk;name,x\na;1,2\nb;3,4\n")
    for name in ("1,2", "3,4"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="PNG")
    report = validate_config(path, "pk", "name,x", tmp_path, [], delimiter=";")
    assert report.columns == ["pk", "name,x"] and report.delimiter == ";"
    Project.create("Override", path, "pk", "name,x", tmp_path, [], delimiter=";",
                   folder=tmp_path / "p")  # fmt: skip
    assert (tmp_path / "p" / "master.csv").read_text() == 'pk,"name,x"\na,"1,2"\nb,"3,4"\n'
