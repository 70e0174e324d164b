"""The app side of part names, ground truth, mIoU, sweep and export: the API and a real browser
against `sst-desktop --serve` on the sample project after a real run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import TEST_IMAGE_SIZE

from sst_desktop.data import registry, sample
from sst_desktop.data.project import Project
from sst_desktop.errors import UserError
from sst_desktop.run import evaluate as evaluate_mod
from sst_desktop.run.runner import RunOptions, run_inference

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _wait_job(api, job_id, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.job_status(job_id)
        if status["state"] != "running":
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running")


@pytest.fixture()
def sample_project(sam2_checkpoint):
    """The sample project, run: one ground-truth mask per group as its reference, then --infer."""
    entry = registry.ensure_sample_project()
    project = Project.open(entry["spec_path"])
    spec = project.spec
    spec.checkpoint, spec.image_size, spec.device = sam2_checkpoint, TEST_IMAGE_SIZE, "cpu"
    project.save()
    for group in project.groups():
        pk = group.frames[0].pk
        shutil.copyfile(sample.sample_gt_mask_dir() / f"{pk}.png", project.ref_mask_path(pk))
    summary = run_inference(project, RunOptions())
    assert summary.written == 10 and summary.ok
    return entry["id"], project


def test_part_names_and_ground_truth_are_saved_in_the_spec(tmp_path):
    from sst_desktop.app.api import Api

    entry = registry.ensure_sample_project()
    api = Api(mode="browser")
    pid = entry["id"]
    summary = next(p for p in api.list_projects() if p["id"] == pid)
    assert summary["labels"] == sample.PART_NAMES
    assert summary["ground_truth"] == str(sample.sample_gt_mask_dir())
    saved = api.set_part_names(pid, {"1": "forewing", "2": "", "3": "head", "7": "antenna"})
    assert saved == {"1": "forewing", "3": "head", "7": "antenna"}
    stored = json.loads(Path(entry["spec_path"]).read_text(encoding="utf-8"))
    assert stored["labels"] == saved
    with pytest.raises(UserError) as info:
        api.set_part_names(pid, {"1": "head", "3": "Head"})
    # The app speaks of parts, not of spec.json's key and IDs.
    assert str(info.value) == "Parts 1 and 3 are both named 'Head': give each part its own name."
    assert json.loads(Path(entry["spec_path"]).read_text(encoding="utf-8"))["labels"] == saved
    with pytest.raises(UserError, match="does not exist"):
        api.set_ground_truth(pid, str(tmp_path / "nope"))
    assert api.set_ground_truth(pid, None) == {"ground_truth": None}
    assert api.evaluate_project(pid) is None


def test_evaluation_sweep_and_export_through_the_api(sample_project, tmp_path, monkeypatch):
    from sst_desktop.app.api import Api

    pid, project = sample_project
    api = Api(mode="browser")
    result = api.evaluate_project(pid)
    expected = evaluate_mod.evaluate(project)
    assert result["line"] == expected.final_line() and result["images"] == 10
    assert set(result["per_image"]) == {i.pk for i in expected.images}
    # Unchanged folders give the cached numbers; a rewritten prediction is evaluated again.
    calls = []
    real = evaluate_mod.evaluate
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert api.evaluate_project(pid) == result and calls == []
    pk = expected.images[0].pk
    time.sleep(0.01)
    shutil.copyfile(sample.sample_gt_mask_dir() / f"{pk}.png", project.pred_mask_path(pk))
    assert api.evaluate_project(pid)["per_image"][pk] == 1.0 and calls == [1]
    job = api.start_export(pid, {"format": "coco", "out": str(tmp_path / "c.json")})
    status = _wait_job(api, job["job_id"])
    assert status["state"] == "done", status
    assert status["result"]["images"] == 12 and status["done"] == status["total"] == 12
    assert len(json.loads((tmp_path / "c.json").read_text())["images"]) == 12
    job = api.start_sweep(pid, [1], 1)
    status = _wait_job(api, job["job_id"])
    assert status["state"] == "done", status
    overall = status["result"]["overall"]["1"]
    assert overall["seeds"] == 1 and 0.0 <= overall["mean"] <= 1.0
    assert status["done"] == status["total"] == 10


@pytest.mark.browser
def test_browser_shows_miou_per_group_and_image_and_exports(sample_project, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from tests._browser_helpers import ServeProcess, shot

    pid, project = sample_project
    expected = evaluate_mod.evaluate(project)
    server = ServeProcess()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
            )
            page = browser.new_context(viewport={"width": 1360, "height": 860}).new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(60_000)
            page.goto(server.url.split("#")[0] + "#/p/" + quote(pid, safe=""))
            page.wait_for_selector("tr[data-group] td.miou")
            assert page.locator("#project-miou").inner_text() == expected.final_line()
            for key, label in expected.groups:
                value = evaluate_mod.mean_iou(expected.group_parts(key))
                cell = page.locator(f'tr[data-group="{key}"] td.miou')
                assert cell.inner_text() == f"{value:.3f}", label
            shot(page, "quality-groups-miou")
            # The viewer shows the IoU of one predicted image.
            image = expected.images[0]
            page.goto(
                server.url.split("#")[0]
                + f"#/p/{quote(pid, safe='')}/view/{quote(image.group_key, safe='')}/{quote(image.pk, safe='')}"
            )
            page.wait_for_selector("#image-iou")
            assert page.locator("#image-iou").inner_text() == f"IoU {image.iou:.3f}"
            # Export from the project page, with its progress bar and result line.
            page.goto(server.url.split("#")[0] + "#/p/" + quote(pid, safe=""))
            page.click("#export")
            page.select_option("#export-format", "csv")
            out = tmp_path / "parts.csv"
            page.fill("#export-out", str(out))
            page.click('[data-action="start-export"]')
            page.wait_for_selector("#export-result")
            assert page.locator("#quality-progress .progress").count() == 1
            assert page.locator("#export-result").inner_text().startswith("Exported 12 image(s)")
            assert out.is_file() and out.read_text().count("\n") > 12
            shot(page, "quality-export")
            # Part names sit beside the label screen's ID buttons.
            group_key = expected.groups[0][0]
            page.goto(
                server.url.split("#")[0]
                + f"#/p/{quote(pid, safe='')}/label/{quote(group_key, safe='')}"
            )
            page.wait_for_selector('#part-names input[data-id="1"]')
            assert page.locator('#part-names input[data-id="1"]').input_value() == "wings / elytra"
            page.fill('#part-names input[data-id="4"]', "antenna")
            page.press('#part-names input[data-id="4"]', "Enter")
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and Project.open(project.spec_path).spec.labels.get(4) != "antenna"
            ):
                time.sleep(0.2)
            assert Project.open(project.spec_path).spec.labels[4] == "antenna"
            assert errors == []
            browser.close()
    finally:
        server.stop()
