"""Frame states: a reference is never also a prediction; predictions older than a reference are stale."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from sst_desktop.data import mask_state
from sst_desktop.data.project import Project
from tests._project_helpers import TEMPLATE, make_dataset

T0 = 1_700_000_000  # a fixed clock: mtimes are set, never waited for


@pytest.fixture
def project(tmp_path) -> Project:
    csv_path, image_root = make_dataset(tmp_path)
    return Project.create("p", csv_path, "pk", TEMPLATE, image_root, ["Dataset"])


def _mask(path, at: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), color=1).save(path)
    os.utime(path, (at, at))


def test_a_reference_is_not_counted_as_a_prediction(project):
    beetles = project.group("Dataset=beetles")  # b1, b2, b3
    _mask(project.ref_mask_path("b1"), T0)
    _mask(project.pred_mask_path("b1"), T0 + 10)  # a prediction later used as the reference
    _mask(project.pred_mask_path("b2"), T0 + 10)
    state = mask_state.group_state(beetles.frames, mask_state.MaskScan.of(project))
    assert state.references == ["b1"]
    assert state.predicted == ["b2"]
    assert state.counts() == {"images": 3, "refs": 1, "preds": 1, "stale": 0}
    assert project.status(beetles) == {"images": 3, "refs": 1, "preds": 1, "stale": 0}
    assert project.status()["refs"] + project.status()["preds"] == 2


def test_predictions_older_than_the_newest_reference_are_stale(project):
    beetles = project.group("Dataset=beetles")
    _mask(project.ref_mask_path("b1"), T0)
    _mask(project.pred_mask_path("b2"), T0 + 10)
    _mask(project.pred_mask_path("b3"), T0 + 10)
    _mask(project.pred_mask_path("m1"), T0 + 10)  # another group
    assert mask_state.stale_predictions(project, beetles) == set()
    # A new reference in the group (b2's prediction corrected and saved as a reference).
    _mask(project.ref_mask_path("b2"), T0 + 20)
    assert mask_state.stale_predictions(project, beetles) == {"b3"}
    assert mask_state.stale_mask_names(project, beetles) == {"b3.png"}
    assert project.status(beetles) == {"images": 3, "refs": 2, "preds": 1, "stale": 1}
    # The moths group has no new reference: its prediction stays current.
    assert mask_state.stale_predictions(project, project.group("Dataset=moths")) == set()
    # A run writes b3 again: current.
    _mask(project.pred_mask_path("b3"), T0 + 30)
    assert mask_state.stale_predictions(project, beetles) == set()


def test_missing_folders_and_hidden_files(project):
    (project.root / "pred_masks").rmdir()
    (project.root / "ref_masks" / ".b1.png.123.tmp").write_bytes(b"")
    assert mask_state.mask_times(project.root / "pred_masks") == {}
    assert mask_state.project_counts(project) == {"images": 6, "refs": 0, "preds": 0, "stale": 0}


def test_with_shared_references_any_newer_reference_makes_predictions_stale(project):
    _mask(project.ref_mask_path("b1"), T0)
    _mask(project.pred_mask_path("m1"), T0 + 10)  # a moth predicted from the shared set
    moths = project.group("Dataset=moths")
    assert mask_state.stale_predictions(project, moths, scope="all") == set()
    _mask(project.ref_mask_path("b2"), T0 + 20)  # a new beetle reference joins the shared set
    assert mask_state.stale_predictions(project, moths, scope="all") == {"m1"}
    assert mask_state.stale_predictions(project, moths, scope="group") == set()
    project.spec.reference_scope = "all"
    assert project.status(moths)["stale"] == 1
