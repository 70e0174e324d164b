"""An original SST-GUI project folder (spec.json, master.csv, ref_masks/, pred_masks/) used as is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from _run_helpers import make_image, reference_mask

from sst_desktop import cli
from sst_desktop.data.masks import apply_mask_mode, read_mask, write_mask
from sst_desktop.data.project import Project, validate_config

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
