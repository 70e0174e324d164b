"""The runner writes the low-confidence flag from each result's object scores (engine stubbed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from _run_helpers import make_project

from sst_desktop.data.project import Project
from sst_desktop.engine import propagation, sam2_model
from sst_desktop.run.runner import RunOptions, run_inference


def test_run_flags_an_object_the_model_scores_absent(tmp_path, monkeypatch):
    spec_path = make_project(tmp_path, tmp_path / "none.pt")
    data = json.loads(spec_path.read_text())
    data["labels"] = {"1": "wing", "2": "body"}
    spec_path.write_text(json.dumps(data))

    class Memory:
        obj_ids = [1, 2]

    def fake_propagate(handle, memory, targets, batch_size=1, **pipeline):
        for key, load in targets:
            # The run's loaders give a ModelInput: model-size pixels and the displayed size.
            target = load()
            mask = np.zeros((target.height, target.width), np.uint8)
            mask[:5, :5] = 1  # ID 2 absent, as SAM2 blanks an object it scores below 0
            scores = {1: 4.0, 2: -2.5} if key == "a1" else {1: 4.0, 2: 0.5}
            yield propagation.PropagationResult(key=key, mask=mask, object_scores=scores)

    handle = SimpleNamespace(image_size=256, device="cpu")  # the run reads the model input size
    monkeypatch.setattr(sam2_model, "get_model", lambda *a, **k: handle)
    monkeypatch.setattr(propagation, "build_reference_memory", lambda *a, **k: Memory())
    monkeypatch.setattr(propagation, "propagate", fake_propagate)
    summary = run_inference(Project.open(spec_path), RunOptions())
    flags = {item["pk"]: item["reasons"] for item in summary.flagged}
    assert summary.written == 4
    low = [r for r in flags["a1"] if r.startswith("low_confidence")]
    assert low == ["low_confidence (2 body: the model scores it as absent, object score -2.50 < 0)"]
    assert not any(r.startswith("low_confidence") for r in flags["a2"])
    # ID 2 is in the reference and not in the masks: missing_id names the part too.
    assert "missing_id (2 body: in every reference, not in the prediction)" in flags["a2"]
