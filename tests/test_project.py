"""Project model: creation, frames and groups, mask paths, sampling, validation report."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from sst_desktop import paths
from sst_desktop.data import registry
from sst_desktop.data.project import (
    Project,
    UnknownKeyError,
    mask_file_name,
    pk_from_mask_file_name,
    sample_references,
    validate_config,
)
from sst_desktop.errors import SpecError, UserError
from tests._project_helpers import ROWS, TEMPLATE, make_dataset, write_csv


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path)


@pytest.fixture
def project(dataset) -> Project:
    csv_path, image_root = dataset
    project, _ = registry.create_project(
        "Beetles & Moths",
        csv_path,
        "pk",
        TEMPLATE,
        image_root,
        ["Dataset"],
        sam2="sam2.1_hiera_tiny",
    )
    return project


def _id(project: Project) -> str:
    return registry.project_id_for(project.spec_path)


def _save_mask(path, size=(8, 8), value=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=value).save(path)


# ---------------------------------------------------------------------------------------------
# Creation


def test_create_makes_a_registered_project_folder(project, dataset):
    csv_path, image_root = dataset
    root = project.root
    assert root == paths.projects_dir() / "beetles-moths"
    assert (root / "master.csv").read_bytes() == csv_path.read_bytes()
    assert (root / "ref_masks").is_dir() and (root / "pred_masks").is_dir()
    stored = json.loads((root / "spec.json").read_text())
    assert stored["csv"] == "master.csv" and stored["root"] == "."
    assert stored["image_root"] == str(image_root)
    assert stored["name"] == "Beetles & Moths" and stored["sam2"] == "sam2.1_hiera_tiny"
    (entry,) = registry.list_projects()
    assert entry["id"] == _id(project) and entry["spec_path"] == str(root / "spec.json")
    assert not entry["missing"]
    # Reopening from spec.json gives the same project.
    again = Project.open(root / "spec.json")
    assert [f.pk for f in again.frames()] == [r[0] for r in ROWS]
    assert _id(again) == entry["id"]


def test_create_twice_with_the_same_name_gets_a_new_folder(project, dataset):
    csv_path, image_root = dataset
    second, _ = registry.create_project("Beetles & Moths", csv_path, "pk", TEMPLATE, image_root, [])
    assert second.root != project.root and second.root.name == "beetles-moths-2"
    assert _id(second) != _id(project)
    assert len(registry.list_projects()) == 2


def test_create_in_a_chosen_folder(dataset, tmp_path):
    csv_path, image_root = dataset
    folder = tmp_path / "my project"
    p = Project.create("x", csv_path, "pk", TEMPLATE, image_root, ["Dataset"], folder=folder)
    assert p.root == folder and (folder / "spec.json").is_file()


def test_create_refuses_a_folder_that_holds_a_project(dataset, tmp_path):
    csv_path, image_root = dataset
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "master.csv").write_text("precious")
    with pytest.raises(UserError, match="already has master.csv"):
        registry.create_project("x", csv_path, "pk", TEMPLATE, image_root, [], folder=folder)
    assert (folder / "master.csv").read_text() == "precious"
    assert registry.list_projects() == []


def test_create_with_duplicate_keys_creates_nothing(tmp_path):
    rows = [*ROWS, ("b1", "beetles", "dorsal", "img_01")]
    csv_path, image_root = make_dataset(tmp_path, rows)
    with pytest.raises(UserError, match=r"'b1' \(rows 2, 8\)"):
        registry.create_project("dup", csv_path, "pk", TEMPLATE, image_root, ["Dataset"])
    assert list(paths.projects_dir().iterdir()) == []
    assert registry.list_projects() == []


def test_create_with_bad_settings_creates_nothing(dataset):
    csv_path, image_root = dataset
    with pytest.raises(SpecError, match="'mask_mode' is 'quadrant'"):
        Project.create("m", csv_path, "pk", TEMPLATE, image_root, [], mask_mode="quadrant")
    with pytest.raises(SpecError, match="'image_size'"):
        Project.create("m", csv_path, "pk", TEMPLATE, image_root, [], image_size=100)
    assert list(paths.projects_dir().iterdir()) == []


def test_create_defaults_name_and_image_root(dataset, tmp_path):
    csv_path, _ = dataset
    # Image paths relative to the CSV's folder when no image root is given.
    p = Project.create("", csv_path, "pk", "images/" + TEMPLATE, None, [])
    assert p.name == "meta"
    assert p.spec.image_root == tmp_path
    assert all(f.image_path.is_file() for f in p.frames() if f.pk != "x1")


# ---------------------------------------------------------------------------------------------
# Frames and groups


def test_groups_and_frames(project, dataset):
    _, image_root = dataset
    groups = project.groups()
    assert [g.label for g in groups] == ["Dataset=beetles", "Dataset=moths", "Dataset=(empty)"]
    assert [f.pk for f in groups[0].frames] == ["b1", "b2", "b3"]  # CSV order
    b3 = project.frame("b3")
    assert b3.row == 3 and b3.group_key == groups[0].key
    assert b3.image_path == image_root / "beetles" / "img_04.jpg"
    assert project.frame("x1").image_path == image_root / "img_06.jpg"
    assert project.group(groups[1].key) is groups[1]
    assert project.group("Dataset=moths") is groups[1]
    assert project.row_values("m1") == {
        "pk": "m1",
        "Dataset": "moths",
        "View": "dorsal",
        "Image_name": "img_03",
    }


def test_unknown_pk_and_group(project):
    with pytest.raises(UnknownKeyError, match="no image with primary key 'zz'") as info:
        project.frame("zz")
    assert isinstance(info.value, KeyError) and isinstance(info.value, UserError)
    assert not str(info.value).startswith("'")
    with pytest.raises(UnknownKeyError, match="no group 'nope'"):
        project.group("nope")


def test_project_opens_lazily(project):
    # A CSV that went bad after creation fails when rows are needed, with the CSV's message.
    (project.root / "master.csv").write_bytes(b"pk,x\n\xff\xfe,1\n")
    reopened = Project.open(project.spec_path)
    with pytest.raises(UserError, match="not valid UTF-8"):
        reopened.groups()


# ---------------------------------------------------------------------------------------------
# Masks


def test_mask_paths(project):
    assert project.ref_mask_path("b1") == project.root / "ref_masks" / "b1.png"
    assert project.pred_mask_path("b1") == project.root / "pred_masks" / "b1.png"


@pytest.mark.parametrize(
    "pk",
    [
        "a/b",
        "a\\b",
        "..",
        "../../etc/passwd",
        "x\x00y",
        "50%",
        "CON",
        "nul.txt",
        ".hidden",
        "a:b*?",
    ],
)
def test_unsafe_pks_are_escaped_reversibly(project, pk):
    name = mask_file_name(pk)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and name.endswith(".png")
    assert name.split(".")[0].upper() not in {"CON", "NUL"}
    assert pk_from_mask_file_name(name) == pk
    assert project.ref_mask_path(pk).parent == project.root / "ref_masks"


def test_escaping_is_injective():
    pks = ["a/b", "a%2Fb", "a%252Fb", "%2Fb", "/b"]
    names = [mask_file_name(pk) for pk in pks]
    assert len(set(names)) == len(names)


def test_safe_pks_keep_original_sst_gui_names():
    assert mask_file_name("NEON.BET.D01.000123") == "NEON.BET.D01.000123.png"
    assert mask_file_name("Käfer 1 (dorsal)") == "Käfer 1 (dorsal).png"


def test_reference_frames_and_status(project):
    beetles = project.groups()[0]
    _save_mask(project.ref_mask_path("b3"))
    _save_mask(project.ref_mask_path("b1"))
    _save_mask(project.pred_mask_path("b2"))
    _save_mask(project.ref_mask_path("m1"))
    (project.root / "ref_masks" / ".b2.png.123.tmp").write_bytes(b"")  # an interrupted write
    assert [f.pk for f in project.reference_frames(beetles)] == ["b1", "b3"]  # CSV order
    assert [f.pk for f in project.reference_frames(beetles.key)] == ["b1", "b3"]
    assert project.status(beetles) == {"images": 3, "refs": 2, "preds": 1, "stale": 0}
    assert project.status() == {"images": 6, "refs": 3, "preds": 1, "stale": 0}
    assert len(project.groups()) == 3


def test_status_without_mask_folders(project):
    (project.root / "ref_masks").rmdir()
    assert project.status() == {"images": 6, "refs": 0, "preds": 0, "stale": 0}


# ---------------------------------------------------------------------------------------------
# Reference sampling


def test_sample_references_matches_original_sst_gui():
    frames = list(range(10))
    for seed in (0, 1, 42, "beetles"):
        for n in (1, 3, 10):
            assert sample_references(frames, n, seed) == random.Random(seed).sample(frames, k=n)
    # Pinned values: a change in the algorithm would change users' references.
    assert sample_references(frames, 3, 0) == [6, 9, 0]
    assert sample_references(list("abcdef"), 2, 42) == ["f", "a"]


def test_sample_references_edge_cases():
    assert sorted(sample_references([1, 2, 3], 10, 0)) == [1, 2, 3]
    assert sample_references([1, 2, 3], 0, 0) == []
    assert sample_references([], 3, 0) == []
    with pytest.raises(UserError):
        sample_references([1], -1, 0)


def test_project_sample_references_uses_group_csv_order(project):
    beetles = project.groups()[0]
    picked = project.sample_references(beetles.key, 2, 7)
    assert [f.pk for f in picked] == [f.pk for f in random.Random(7).sample(beetles.frames, k=2)]


# ---------------------------------------------------------------------------------------------
# Validation report


def test_report_for_a_good_config(dataset):
    csv_path, image_root = dataset
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, ["Dataset"])
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.rows == 6 and report.groups == 3
    assert [g["size"] for g in report.group_sizes] == [3, 2, 1]
    assert report.images_found == 6 and report.images_missing == 0
    assert report.images_checked == 6 and report.unreadable_count == 0
    d = report.to_dict()
    assert json.loads(json.dumps(d))["ok"] is True
    assert any("6 rows" in line for line in report.summary_lines())


def test_report_missing_and_unreadable_images(dataset):
    csv_path, image_root = dataset
    (image_root / "beetles" / "img_02.jpg").unlink()
    (image_root / "moths" / "img_05.jpg").write_bytes(b"not a jpeg at all")
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, [])
    assert report.ok  # missing or bad images are skipped frames, not a blocked project
    assert report.images_found == 5 and report.images_missing == 1
    assert report.missing_examples == [f"{image_root / 'beetles' / 'img_02.jpg'} (CSV row 3)"]
    assert report.unreadable_count == 1 and report.unreadable[0]["pk"] == "m2"
    assert len(report.warnings) == 2
    # Without the deeper check no header is opened.
    quick = validate_config(csv_path, "pk", TEMPLATE, image_root, [], check_images=False)
    assert quick.images_checked == 0 and quick.unreadable_count == 0


def test_report_image_check_limit_samples(dataset):
    csv_path, image_root = dataset
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, [], image_check_limit=2)
    assert report.images_checked == 2 and report.images_found == 6


def test_report_duplicate_and_blank_keys(tmp_path):
    rows = [*ROWS, ("b1", "beetles", "dorsal", "img_01"), ("", "moths", "dorsal", "img_03")]
    csv_path, image_root = make_dataset(tmp_path, rows)
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, ["Dataset"])
    assert not report.ok
    assert report.duplicate_key_count == 1 and report.duplicate_keys == [
        {"key": "b1", "rows": [2, 8]}
    ]
    assert report.blank_keys == 1 and report.blank_key_rows == [9]
    with pytest.raises(UserError, match="blank"):
        report.raise_for_errors()


def test_report_keys_differing_only_in_case(tmp_path, monkeypatch):
    import sst_desktop.data.validation as validation_module

    rows = [*ROWS, ("B1", "beetles", "dorsal", "img_07")]  # "b1" is on row 2
    csv_path, image_root = make_dataset(tmp_path, rows)
    monkeypatch.setattr(validation_module, "_CASE_INSENSITIVE_FILE_NAMES", False)
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, ["Dataset"])
    assert report.ok
    assert any("'b1' on row 2 and 'B1' on row 8" in w for w in report.warnings)
    monkeypatch.setattr(validation_module, "_CASE_INSENSITIVE_FILE_NAMES", True)
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, ["Dataset"])
    assert not report.ok and "letter case" in report.errors[0]


@pytest.mark.parametrize(
    "key, template, group_by, expected",
    [
        ("id", TEMPLATE, [], "Primary key column 'id' is not in"),
        ("pk", "{Folder}/{Image_name}.jpg", [], "uses column 'Folder'"),
        ("pk", TEMPLATE, ["Species"], "Group-by column 'Species' is not in"),
        ("pk", TEMPLATE, ["View", "View"], "twice"),
    ],
)
def test_report_missing_columns(dataset, key, template, group_by, expected):
    csv_path, image_root = dataset
    report = validate_config(csv_path, key, template, image_root, group_by)
    assert not report.ok and any(expected in e for e in report.errors), report.errors
    assert report.rows == 6


def test_report_unusable_csvs(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("pk,path\n1,K\u00e4fer.jpg\n".encode("cp1252"))
    header_only = write_csv(tmp_path / "h.csv", [])
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    for path, expected in [(latin, "UTF-8"), (header_only, "no data rows"), (empty, "empty")]:
        report = validate_config(path, "pk", "path", tmp_path, [])
        assert not report.ok and expected in report.errors[0], report.errors


def test_report_wrong_image_root(dataset, tmp_path):
    csv_path, _ = dataset
    report = validate_config(csv_path, "pk", TEMPLATE, tmp_path / "nowhere", [])
    assert not report.ok and "is not a folder" in report.errors[0]
    report = validate_config(csv_path, "pk", TEMPLATE, tmp_path, [])
    assert not report.ok and "None of the 6 image paths exist" in report.errors[0]
    assert report.images_missing == 6 and len(report.missing_examples) == 5


# ---------------------------------------------------------------------------------------------
# Original SST-GUI projects


def test_open_original_sst_gui_project(tmp_path):
    csv_path, image_root = make_dataset(tmp_path)
    root = tmp_path / "old"
    rows = [(pk, ds, v, str(image_root / ds / f"{n}.jpg")) for pk, ds, v, n in ROWS]
    write_csv(root / "master.csv", rows, columns=["pk", "Dataset", "View", "path"])
    _save_mask(root / "ref_masks" / "b2.png")
    spec = {
        "root": str(root),
        "filter_query": "SELECT * FROM master_df",
        "group_by": ["Dataset", "View"],
        "img_path": "path",
        "primary_key": "pk",
        "sam2": "facebook/sam2.1-hiera-large",
        "device": "cuda",
        "mask_mode": "position",
    }
    (root / "spec.json").write_text(json.dumps(spec))
    p = Project.open(root / "spec.json")
    assert p.spec.legacy
    first = p.groups()[0]
    assert first.label == "Dataset=beetles, View=dorsal"
    assert [f.pk for f in p.reference_frames(first)] == ["b2"]
    assert p.frame("m1").image_path == image_root / "moths" / "img_03.jpg"


def test_concurrent_first_use_reads_the_csv_once(project, monkeypatch):
    import threading
    import time

    from sst_desktop.data import table

    calls = []
    real = table.read_csv

    def slow_read_csv(path):
        calls.append(path)
        time.sleep(0.05)  # widen the window in which other threads could start a second read
        return real(path)

    monkeypatch.setattr(table, "read_csv", slow_read_csv)
    reopened = Project.open(project.spec_path)
    results, errors = [], []

    def use():
        try:
            results.append(reopened.frame("b3").row)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [3] * 6
    assert len(calls) == 1


def test_reload_reads_an_edited_csv(project):
    assert len(project.frames()) == 6
    master = project.root / "master.csv"
    master.write_text(master.read_text() + "n1,moths,dorsal,img_07\n")
    assert len(project.frames()) == 6  # cached
    project.reload()
    assert project.frame("n1").row == 6


def test_group_by_given_as_one_string(dataset):
    csv_path, image_root = dataset
    report = validate_config(csv_path, "pk", TEMPLATE, image_root, "Dataset")
    assert report.ok and report.groups == 3
    p = Project.create("s", csv_path, "pk", TEMPLATE, image_root, "Dataset")
    assert p.spec.group_by == ["Dataset"]


def test_large_csv_needs_no_per_row_filesystem_calls(tmp_path, monkeypatch):
    from sst_desktop.data.spec import Spec, save_spec

    n = 10_000
    rows = [(f"K{i:05d}", f"ds{i % 3}", f"sp{i % 50}", f"im{i}") for i in range(n)]
    write_csv(tmp_path / "big.csv", rows)
    spec = Spec(
        root=tmp_path,
        csv=tmp_path / "big.csv",
        primary_key="pk",
        img_path=TEMPLATE,
        group_by=["Dataset", "View"],
    )
    save_spec(spec, tmp_path / "spec.json")
    for i in range(0, n, 7):
        _save_mask(tmp_path / "ref_masks" / f"K{i:05d}.png", size=(1, 1))
    import os

    calls = {"stat": 0, "scandir": 0}
    real_stat, real_scandir = os.stat, os.scandir

    def counting_stat(*args, **kwargs):
        calls["stat"] += 1
        return real_stat(*args, **kwargs)

    def counting_scandir(*args, **kwargs):
        calls["scandir"] += 1
        return real_scandir(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(os, "scandir", counting_scandir)
    p = Project.open(tmp_path / "spec.json")
    groups = p.groups()
    assert len(groups) == 150 and sum(len(g.frames) for g in groups) == n
    assert p.status() == {"images": n, "refs": len(range(0, n, 7)), "preds": 0, "stale": 0}
    assert len(p.reference_frames(groups[0])) == sum(
        1 for f in groups[0].frames if int(f.pk[1:]) % 7 == 0
    )
    assert 0 < calls["stat"] < 50, calls  # a handful for the spec and CSV, none per row
    assert calls["scandir"] == 3  # status: refs + preds; reference_frames: refs
