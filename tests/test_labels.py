"""Tests for part names: the spec's `labels` map, its validation and the sample's names."""

from __future__ import annotations

import json

import pytest

from sst_desktop.data import labels as labels_mod
from sst_desktop.data import sample
from sst_desktop.data.spec import load_spec, save_spec
from sst_desktop.errors import SpecError


def write_spec(tmp_path, **extra):
    (tmp_path / "master.csv").write_text("id,file\na,a.png\n", encoding="utf-8")
    data = {"version": 1, "primary_key": "id", "img_path": "file", "csv": "master.csv", **extra}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_labels_load_save_and_round_trip(tmp_path):
    path = write_spec(tmp_path, labels={"2": "body", "1": " left  forewing "})
    spec = load_spec(path)
    assert spec.labels == {1: "left forewing", 2: "body"}
    save_spec(spec, path)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["labels"] == {"1": "left forewing", "2": "body"}
    assert load_spec(path).labels == spec.labels


def test_spec_without_labels_has_none_and_writes_none(tmp_path):
    path = write_spec(tmp_path)
    spec = load_spec(path)
    assert spec.labels == {}
    save_spec(spec, path)
    assert "labels" not in json.loads(path.read_text(encoding="utf-8"))


def test_original_sst_gui_spec_still_opens_and_may_carry_labels(tmp_path):
    (tmp_path / "master.csv").write_text("id,file\na,a.png\n", encoding="utf-8")
    legacy = {
        "root": ".",
        "filter_query": "SELECT * FROM master_df",
        "group_by": [],
        "img_path": "file",
        "primary_key": "id",
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(legacy), encoding="utf-8")
    assert load_spec(path).labels == {}
    path.write_text(json.dumps({**legacy, "labels": {"1": "wing"}}), encoding="utf-8")
    assert load_spec(path).labels == {1: "wing"}


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (["wing"], "must be an object"),
        ({"0": "background"}, 'ID "0"'),
        ({"256": "x"}, 'ID "256"'),
        ({"one": "x"}, 'ID "one"'),
        ({"1": ""}, "non-empty"),
        ({"1": 3}, "non-empty"),
        ({"1": "wing", "2": "Wing"}, "IDs 1 and 2 both"),
        ({"1": "x" * 200}, "characters"),
    ],
)
def test_bad_labels_are_one_line_spec_errors(tmp_path, value, needle):
    path = write_spec(tmp_path, labels=value)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert "\n" not in text and "'labels'" in text and needle in text and str(path) in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"1": "wing", "4": "Wing"},
            "Parts 1 and 4 are both named 'Wing': give each part its own name.",
        ),
        ({"2": "x" * 90}, "The name of part 2 is 90 characters long: keep it under 81."),
        ({"1": "wing", "01": "body"}, "Part 1 is named twice: keep one name."),
        (
            {"0": "wing"},
            'There is no part "0": parts are numbered with whole numbers from 1 '
            "to 255 (0 is the background).",
        ),
    ],
)
def test_part_name_errors_for_the_app_speak_of_parts(value, message):
    with pytest.raises(SpecError) as err:
        labels_mod.parse_labels(value, source="Project 'Beetles'", parts=True)
    assert str(err.value) == message


def test_part_name_and_describe():
    names = {1: "wings", 2: "body"}
    assert labels_mod.part_name(names, 2) == "body"
    assert labels_mod.part_name(names, 7) == "ID 7"
    assert labels_mod.part_name(None, 1) == "ID 1"
    assert labels_mod.describe_ids(names, [1, 3]) == "1 wings, 3"


def test_sample_names_every_ground_truth_id():
    names = sample.sample_labels()
    gt_ids = {i for ids in sample.GT_IDS.values() for i in ids.values()}
    assert set(names) == gt_ids
    assert all(names.values())


def test_sample_project_names_its_parts_and_knows_its_ground_truth():
    from sst_desktop.data import registry
    from sst_desktop.data.project import Project

    entry = registry.ensure_sample_project()
    project = Project.open(entry["spec_path"])
    assert project.spec.labels == sample.sample_labels()
    assert project.spec.ground_truth == sample.sample_gt_mask_dir()
