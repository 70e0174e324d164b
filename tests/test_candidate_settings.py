"""Per-project candidate settings: presets, plain-word help, what a spec stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sst_desktop.data import candidate_settings as cs
from sst_desktop.data.candidate_settings import CandidateParams
from sst_desktop.data.spec import load_spec, save_spec
from sst_desktop.errors import SpecError, UserError
from tests._project_helpers import ROWS, write_csv


def test_machine_default_preset_is_fast_without_a_gpu():
    preset, params = cs.resolve(None, has_gpu=False)
    assert preset == "fast" and params.points_per_side == 16 and params.max_side == 1024
    preset, params = cs.resolve(None, has_gpu=True)
    assert preset == "thorough" and params == CandidateParams()  # the original SST-GUI setup


def test_stored_is_preset_plus_changes_and_round_trips():
    params = CandidateParams.from_dict({**cs.PRESETS["fast"], "pred_iou_thresh": 0.5})
    stored = cs.to_stored("fast", params)
    assert stored == {"preset": "fast", "pred_iou_thresh": 0.5}
    assert cs.resolve(stored, has_gpu=True) == ("fast", params)
    assert cs.to_stored("thorough", CandidateParams()) == {"preset": "thorough"}


def test_every_setting_has_a_label_and_one_line_help():
    info = cs.describe(None, has_gpu=False)
    assert set(info["help"]) == set(CandidateParams().to_dict())
    for entry in info["help"].values():
        assert entry["label"] and entry["help"] and "\n" not in entry["help"]
        assert "_" not in entry["label"]  # plain words, not parameter names
    assert info["preset"] == info["default_preset"] == "fast"
    assert info["values"] == info["presets"]["fast"]


@pytest.mark.parametrize(
    "stored, match",
    [
        ({"preset": "turbo"}, "preset 'turbo' is unknown"),
        ({"points_per_side": 0}, "points_per_side"),
        ({"pointz": 3}, "Unknown candidate setting 'pointz'"),
    ],
)
def test_bad_stored_settings_are_named(stored, match):
    with pytest.raises(UserError, match=match):
        cs.resolve(stored, has_gpu=False)


def _spec_file(tmp_path: Path, **extra) -> Path:
    write_csv(tmp_path / "meta.csv", ROWS)
    data = {"version": 1, "csv": "meta.csv", "primary_key": "pk", "img_path": "path"} | extra
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_spec_keeps_candidate_settings(tmp_path):
    path = _spec_file(tmp_path, candidates={"preset": "fast", "points_per_side": 24})
    spec = load_spec(path, check_csv=False)
    assert spec.candidates == {"preset": "fast", "points_per_side": 24}
    save_spec(spec, path)
    assert json.loads(path.read_text())["candidates"] == spec.candidates
    spec.candidates = None
    save_spec(spec, path)
    assert "candidates" not in json.loads(path.read_text())


def test_spec_with_bad_candidate_settings_names_the_key(tmp_path):
    path = _spec_file(tmp_path, candidates={"points_per_side": -1})
    with pytest.raises(SpecError, match="key 'candidates'.*points_per_side"):
        load_spec(path, check_csv=False)
    path = _spec_file(tmp_path, candidates="fast")
    with pytest.raises(SpecError, match="'candidates' must be an object"):
        load_spec(path, check_csv=False)
