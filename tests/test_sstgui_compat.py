"""An original SST-GUI project folder (spec.json, master.csv, ref_masks/, pred_masks/) used as is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import make_image, reference_mask

from sst_desktop import cli
from sst_desktop.data.masks import apply_mask_mode, read_mask, write_mask
from sst_desktop.data.project import Project, validate_config
from sst_desktop.errors import UserError

# Two datasets (groups): "Heliconius" with one labelled reference, "Danaus" with none.
FRAMES = {
    "Heliconius": [("HE_01", (72, 56)), ("HE_02", (64, 64)), ("HE_03", (56, 80))],
    "Danaus": [("DA_01", (64, 64)), ("DA_02", (64, 48))],
}
REFERENCES = {"HE_01": (72, 56)}
PREDICTED = {"HE_02": (64, 64)}  # a prediction the original SST-GUI already wrote


def make_sstgui_folder(base: Path, **spec_overrides) -> Path:
    """The original SST-GUI's layout, with its example spec's root and image folder moved here."""
    root = base / "cambridge-segmented"
    images = base / "butterflies"
    rows = []
    for dataset, frames in FRAMES.items():
        for index, (name, size) in enumerate(frames):
            make_image(images / dataset / f"{name}.jpg", size, seed=len(rows) + index)
            # The expression drops the first 6 characters ("images") of this column.
            rows.append(
                {"Image_name": name, "Dataset": dataset, "filepath": f"images/{dataset}/{name}.jpg"}
            )
    root.mkdir(parents=True)
    with open(root / "master.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["Image_name", "Dataset", "filepath"])
        writer.writeheader()
        writer.writerows(rows)
    for pk, size in REFERENCES.items():
        # Position mode: the left blob is top-left (1), the right one bottom-right (4).
        write_mask(root / "ref_masks" / f"{pk}.png", reference_mask(size, ids=(1, 4)))
    for pk, size in PREDICTED.items():
        write_mask(root / "pred_masks" / f"{pk}.png", reference_mask(size, ids=(1, 4)))
    spec = {
        "root": str(root),
        "filter_query": "SELECT * FROM master_df",
        "group_by": ["Dataset"],
        "img_path": f"CONCAT('{images}', RIGHT(filepath, LEN(filepath) - 6))",
        "primary_key": "Image_name",
        "sam2": "facebook/sam2.1-hiera-large",
        "device": "cuda",
        "mask_mode": "position",
    } | spec_overrides
    (root / "spec.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return root / "spec.json"


def test_example_spec_passes_the_dry_run(tmp_path, capsys):
    spec = make_sstgui_folder(tmp_path)
    code = cli.main(["--infer", str(spec), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Checked 5 image(s) in 2 group(s) and 1 reference mask(s)" in out
    assert "No problems found." in out


def test_dry_run_reports_images_the_expression_does_not_find(tmp_path, capsys):
    spec = make_sstgui_folder(tmp_path)
    (tmp_path / "butterflies" / "Danaus" / "DA_02.jpg").unlink()
    assert cli.main(["--infer", str(spec), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "Failing primary keys (1):\nDA_02\n" in out
    assert str(tmp_path / "butterflies" / "Danaus" / "DA_02.jpg") in out


def test_folder_opens_with_the_same_groups_references_and_predictions(tmp_path):
    project = Project.open(make_sstgui_folder(tmp_path))
    groups = project.groups()
    assert [g.label for g in groups] == ["Dataset=Heliconius", "Dataset=Danaus"]
    assert [[f.pk for f in g.frames] for g in groups] == [
        [name for name, _ in frames] for frames in FRAMES.values()
    ]
    assert [f.pk for f in project.reference_frames(groups[0])] == ["HE_01"]
    assert project.reference_frames(groups[1]) == []
    assert [f.pk for f in project.predicted_frames(groups[0])] == ["HE_02"]
    assert project.frame("DA_02").image_path == tmp_path / "butterflies" / "Danaus" / "DA_02.jpg"
    status = project.status()
    assert (status["images"], status["refs"], status["preds"]) == (5, 1, 1)


def test_filter_query_selects_the_rows(tmp_path):
    spec = make_sstgui_folder(
        tmp_path,
        filter_query="SELECT * FROM master_df WHERE Dataset = 'Danaus' OR Image_name LIKE '%_01'",
    )
    project = Project.open(spec)
    assert [f.pk for f in project.frames()] == ["HE_01", "DA_01", "DA_02"]
    assert project.row_values("DA_02")["Dataset"] == "Danaus"


def test_saving_keeps_the_expressions(tmp_path):
    query = "SELECT * FROM master_df WHERE Dataset <> 'x'"
    spec_path = make_sstgui_folder(tmp_path, filter_query=query)
    original = json.loads(spec_path.read_text())
    project = Project.open(spec_path)
    project.spec.name = "renamed"
    project.save()
    saved = json.loads(spec_path.read_text())
    # Every key the original SST-GUI reads is still there, with the same value.
    for key in ("root", "filter_query", "group_by", "img_path", "primary_key", "sam2", "device"):
        assert saved[key] == original[key] or Path(saved[key]) == Path(original[key]), key
    assert saved["mask_mode"] == "position"
    reopened = Project.open(spec_path)
    assert [f.pk for f in reopened.frames()] == [f.pk for f in project.frames()]


def test_live_check_shows_the_resolved_paths(tmp_path):
    spec_path = make_sstgui_folder(tmp_path)
    spec = json.loads(spec_path.read_text())
    report = validate_config(
        spec_path.parent / "master.csv", "Image_name", spec["img_path"], None, ["Dataset"]
    )
    assert report.ok, report.errors
    assert report.images_found == 5
    assert report.path_examples[:2] == [
        str(tmp_path / "butterflies" / "Heliconius" / "HE_01.jpg"),
        str(tmp_path / "butterflies" / "Heliconius" / "HE_02.jpg"),
    ]
    bad = validate_config(
        spec_path.parent / "master.csv", "Image_name", "sha256(filepath)", None, ["Dataset"]
    )
    assert bad.errors == [
        "Image path 'sha256(filepath)' uses SHA256, which SST Desktop does not evaluate: use only "
        "CONCAT, ||, LEFT, RIGHT, SUBSTR/SUBSTRING, LEN/LENGTH, REPLACE, LOWER, UPPER, TRIM and "
        "+ - * on whole numbers."
    ]


def test_position_ids_of_original_references_survive(tmp_path):
    spec = make_sstgui_folder(tmp_path)
    project = Project.open(spec)
    mask = read_mask(project.ref_mask_path("HE_01"))
    assert np.array_equal(apply_mask_mode(mask, "position"), mask)


# ---------------------------------------------------------------------------------------------
# reference_scope


def _model_keys(checkpoint: Path, **extra) -> dict:
    """Spec keys that run the small random-weight test model on the CPU."""
    from conftest import TEST_IMAGE_SIZE, TEST_VARIANT

    return {
        "sam2": TEST_VARIANT,
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "image_size": TEST_IMAGE_SIZE,
    } | extra


def _image_size(pk: str) -> tuple[int, int]:
    sizes = {name: size for frames in FRAMES.values() for name, size in frames}
    return sizes[pk]


def test_infer_with_reference_scope_all_predicts_groups_without_references(
    tmp_path, sam2_checkpoint, monkeypatch, capsys
):
    from sst_desktop.engine import propagation

    spec = make_sstgui_folder(tmp_path, **_model_keys(sam2_checkpoint, reference_scope="all"))
    pred = spec.parent / "pred_masks"
    encoded = []
    real = propagation.build_reference_memory

    def counting(handle, references, names=None):
        encoded.append(list(names))
        return real(handle, references, names=names)

    monkeypatch.setattr(propagation, "build_reference_memory", counting)
    assert cli.main(["--infer", str(spec), "--quiet"]) == 0, capsys.readouterr().err
    # Danaus has no reference of its own and is predicted from Heliconius' one.
    for pk in ("HE_03", "DA_01", "DA_02"):
        mask = read_mask(pred / f"{pk}.png", expected_size=_image_size(pk))
        assert set(np.unique(mask).tolist()) <= {0, 1, 4}, pk
    assert not (pred / "HE_01.png").exists()  # a reference gets no prediction
    assert encoded == [["HE_01"]]  # the shared memory is built once for both groups
    summary = json.loads(sorted((spec.parent / "runs").glob("*.json"))[-1].read_text())
    assert summary["reference_scope"] == "all" and summary["groups_without_references"] == []
    assert sorted(summary["written_pks"]) == ["DA_01", "DA_02", "HE_03"]


def test_group_scope_skips_groups_without_references_and_the_flag_overrides(
    tmp_path, sam2_checkpoint, capsys
):
    spec = make_sstgui_folder(tmp_path, **_model_keys(sam2_checkpoint))
    pred = spec.parent / "pred_masks"
    assert cli.main(["--infer", str(spec), "--quiet", "--groups", "Dataset=Danaus"]) == 0
    assert not (pred / "DA_01.png").exists()
    assert (
        cli.main(
            [
                "--infer",
                str(spec),
                "--quiet",
                "--groups",
                "Dataset=Danaus",
                "--reference-scope",
                "all",
            ]
        )
        == 0
    )
    assert (pred / "DA_01.png").is_file() and (pred / "DA_02.png").is_file()
    assert not (pred / "HE_03.png").exists()  # only the chosen group, with the shared references


def test_dry_run_reports_the_shared_reference_set_once(tmp_path, capsys):
    spec = make_sstgui_folder(tmp_path, reference_scope="all")
    write_mask(spec.parent / "ref_masks" / "DA_01.png", reference_mask((64, 64), ids=(1, 4)))
    assert cli.main(["--infer", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("Reference scope 'all'") == 1
    assert (
        "Reference scope 'all': every image of every group is predicted from the same 2 "
        "reference mask(s): HE_01, DA_01" in out
    )
    assert "Checked 5 image(s) in 2 group(s) and 2 reference mask(s)" in out
    assert "no reference masks" not in out
    # Without the shared set, the group without references is reported as skipped.
    (spec.parent / "ref_masks" / "DA_01.png").unlink()
    assert cli.main(["--infer", str(spec), "--dry-run", "--reference-scope", "group"]) == 0
    assert (
        "group Dataset=Danaus: no reference masks; it would be skipped" in capsys.readouterr().out
    )


def test_a_shared_set_over_the_limit_is_refused(tmp_path, sam2_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("SST_DESKTOP_MAX_SHARED_REFERENCES", "1")
    spec = make_sstgui_folder(tmp_path, **_model_keys(sam2_checkpoint, reference_scope="all"))
    write_mask(spec.parent / "ref_masks" / "DA_01.png", reference_mask((64, 64), ids=(1, 4)))
    expected = (
        "reference_scope 'all' would condition every image on 2 reference masks, more than the "
        "limit of 1 (memory attention grows with the number of references): use reference_scope "
        "'group', remove references, or raise SST_DESKTOP_MAX_SHARED_REFERENCES."
    )
    assert cli.main(["--infer", str(spec), "--dry-run"]) == 1
    assert f"problem: {expected}" in capsys.readouterr().out
    assert cli.main(["--infer", str(spec)]) == 2
    assert capsys.readouterr().err == f"sst-desktop: error: {expected}\n"
    assert sorted(p.name for p in (spec.parent / "pred_masks").iterdir()) == ["HE_02.png"]
    # The group scope has no such limit.
    assert cli.main(["--infer", str(spec), "--dry-run", "--reference-scope", "group"]) == 0


def test_reference_scope_value_is_checked(tmp_path):
    from sst_desktop.data.spec import load_spec
    from sst_desktop.errors import SpecError

    spec = make_sstgui_folder(tmp_path, reference_scope="everything")
    with pytest.raises(SpecError, match=r"key 'reference_scope' is 'everything': use 'group'"):
        load_spec(spec)


# ---------------------------------------------------------------------------------------------
# The app


def test_the_app_shows_the_same_groups_references_and_predictions(tmp_path):
    from sst_desktop.app.api import Api
    from sst_desktop.data import registry

    spec = make_sstgui_folder(tmp_path)
    pid = registry.register(spec)["id"]  # what `sst-desktop --project spec.json` does
    api = Api(mode="browser")
    groups = api.list_groups(pid)
    assert [(g["label"], g["images"], g["refs"], g["preds"]) for g in groups] == [
        ("Dataset=Heliconius", 3, 1, 1),
        ("Dataset=Danaus", 2, 0, 0),
    ]
    frames = api.group_frames(pid, groups[0]["key"])
    assert [f["pk"] for f in frames] == ["HE_01", "HE_02", "HE_03"]
    assert [bool(f["ref_url"]) for f in frames] == [True, False, False]
    assert [bool(f["pred_url"]) for f in frames] == [False, True, False]


def test_app_settings_change_the_reference_scope(tmp_path, monkeypatch):
    from sst_desktop.app.api import Api
    from sst_desktop.data import registry

    spec = make_sstgui_folder(tmp_path)
    pid = registry.register(spec)["id"]
    api = Api(mode="browser")
    assert api.project_settings(pid)["reference_scope"] == "group"
    assert [g["shared_refs"] for g in api.list_groups(pid)] == [0, 0]
    saved = api.update_project_settings(pid, {"reference_scope": "all"})
    assert saved["reference_scope"] == "all"
    assert json.loads(spec.read_text())["reference_scope"] == "all"
    # Danaus has no reference of its own but will be predicted from the shared one.
    assert [(g["refs"], g["shared_refs"]) for g in api.list_groups(pid)] == [(1, 1), (0, 1)]
    with pytest.raises(UserError, match="key 'reference_scope' is 'some'"):
        api.update_project_settings(pid, {"reference_scope": "some"})
    api.update_project_settings(pid, {"reference_scope": "group"})
    monkeypatch.setenv("SST_DESKTOP_MAX_SHARED_REFERENCES", "1")
    write_mask(spec.parent / "ref_masks" / "DA_01.png", reference_mask((64, 64), ids=(1, 4)))
    with pytest.raises(UserError, match="would condition every image on 2 reference masks"):
        api.update_project_settings(pid, {"reference_scope": "all"})
    assert json.loads(spec.read_text())["reference_scope"] == "group"  # nothing saved
