"""Per-project candidate settings and streamed candidates through the JS API."""

from __future__ import annotations

import json

import pytest
from _app_helpers import make_dataset, project_config

from sst_desktop.app import candidates_api
from sst_desktop.app.api import Api
from sst_desktop.data.spec import load_spec
from sst_desktop.errors import UserError

LOOSE = {
    "points_per_side": 4,
    "points_per_batch": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


@pytest.fixture()
def two_projects(tmp_path, sam2_checkpoint):
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    ids = []
    for name in ("a", "b"):
        config = project_config(
            csv_path, folder=tmp_path / name, checkpoint=str(sam2_checkpoint), name=f"P {name}"
        )
        ids.append(api.create_project(config)["id"])
    return api, ids


def _spec(api, pid):
    return load_spec(api._project(pid).spec_path, check_csv=False)


def test_settings_are_saved_per_project_and_reset(two_projects):
    api, (a, b) = two_projects
    info = api.candidate_settings(a)
    assert info["preset"] == info["default_preset"] == "fast"  # device cpu: no GPU
    assert info["help"]["points_per_side"]["label"] == "Points across the image"
    saved = api.set_candidate_settings(a, "fast", {"points_per_side": 24})
    assert saved["values"]["points_per_side"] == 24 and saved["preset"] == "fast"
    assert _spec(api, a).candidates == {"preset": "fast", "points_per_side": 24}
    assert api.candidate_settings(b)["values"]["points_per_side"] == 16  # b keeps its own
    assert _spec(api, b).candidates is None
    api.set_candidate_settings(a, "thorough")
    assert api.candidate_settings(a)["values"]["points_per_side"] == 48
    reset = api.reset_candidate_settings(a)
    assert reset["preset"] == "fast" and reset["values"] == reset["presets"]["fast"]
    spec_file = json.loads(api._project(a).spec_path.read_text())
    assert "candidates" not in spec_file
    with pytest.raises(UserError, match="preset 'turbo' is unknown"):
        api.set_candidate_settings(a, "turbo")
    with pytest.raises(UserError, match="points_per_side"):
        api.set_candidate_settings(a, "fast", {"points_per_side": 0})
    assert _spec(api, a).candidates is None  # a refused change writes nothing


def test_generation_uses_the_project_settings_and_streams_into_the_session(
    two_projects, monkeypatch
):
    api, (a, _) = two_projects
    monkeypatch.setattr(candidates_api, "UPDATE_EVERY_S", 0.0)  # every batch goes to the session
    api.set_candidate_settings(a, "fast", LOOSE)
    pk = api.sample_references(a, api.list_groups(a)[0]["key"], 1, 0)["pks"][0]
    api.open_frame(a, pk)
    job = api.generate_candidates(a, pk)["job_id"]  # no params: the project's settings
    api._jobs.wait(job, timeout=240)
    status = api.job_status(job)
    assert status["state"] == "done", status["error"]
    assert status["total"] == 4  # 16 prompts in steps of 4: the project's settings were used
    frame = api.open_frame(a, pk)
    updates = api.candidate_updates(a, pk, 0)
    assert updates["job_id"] == job and updates["version"] >= 2  # provisional, then final
    assert sorted(m["index"] for m in updates["masks"]) == sorted(
        m["index"] for m in frame["masks"]
    )
    assert api.candidate_updates(a, pk, updates["version"])["masks"] == []
    # A second generation replaces the unlabelled candidates: the update says which went.
    again = api.generate_candidates(a, pk)["job_id"]
    api._jobs.wait(again, timeout=240)
    later = api.candidate_updates(a, pk, updates["version"])
    assert set(later["removed"]) == {m["index"] for m in frame["masks"]}
    assert {m["index"] for m in later["masks"]} == {
        m["index"] for m in api.open_frame(a, pk)["masks"]
    }


def test_a_click_after_generating_reuses_the_embedding(two_projects):
    api, (a, _) = two_projects
    api.set_candidate_settings(a, "fast", LOOSE)
    pk = api.sample_references(a, api.list_groups(a)[0]["key"], 1, 0)["pks"][0]
    api.open_frame(a, pk)
    api._jobs.wait(api.generate_candidates(a, pk)["job_id"], timeout=240)
    handle = next(iter(api._services.refiners))
    refiner = api._services.refiners[handle]
    assert refiner.encodings == 1
    api.refine_mask(a, pk, {"points": [[40, 30]], "labels": [1]})
    assert refiner.encodings == 1
