"""The JS API end to end on a real tiny project with the random-weight SAM2 checkpoint."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from _app_helpers import make_dataset, project_config
from _project_helpers import hold_file_removal
from PIL import Image

from sst_desktop.app.api import API_METHODS, Api, ApiError
from sst_desktop.data import masks, registry, sample
from sst_desktop.errors import UserError

# Low thresholds: random weights give low scores, and the test needs some candidates.
LOOSE = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture()
def api_project(tmp_path, sam2_checkpoint):
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    config = project_config(csv_path, folder=tmp_path / "proj", checkpoint=str(sam2_checkpoint))
    summary = api.create_project(config)
    return api, summary


def _wait(api: Api, job_id: str, timeout: float = 240) -> dict:
    api._jobs.wait(job_id, timeout=timeout)
    return api.job_status(job_id)


def _group_key(api: Api, pid: str, species: str) -> str:
    groups = api.list_groups(pid)
    return next(g["key"] for g in groups if species in g["label"])


def test_every_public_method_is_in_the_allow_list_and_vice_versa():
    public = {n for n in dir(Api) if not n.startswith("_") and callable(getattr(Api, n))}
    assert public == set(API_METHODS)


def test_project_screens_csv_preview_validation_and_upload(tmp_path):
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    preview = api.preview_csv(str(csv_path))
    assert preview["columns"] == ["pk", "species", "file"]
    assert preview["n_rows"] == 6 and preview["rows"][0] == [
        "beetle-0",
        "beetle",
        "images/beetle-0.jpg",
    ]

    report = api.validate_config(project_config(csv_path))
    assert report["ok"] is True and report["groups"] == 2 and report["images_found"] == 6
    bad = api.validate_config(project_config(csv_path, img_path="nope", image_size=100))
    assert bad["ok"] is False
    assert any("nope" in e for e in bad["errors"])
    assert any("'image_size' is 100" in e for e in bad["errors"])
    assert api.validate_config({"csv": ""})["ok"] is False

    data = base64.b64encode(csv_path.read_bytes()).decode()
    uploaded = api.upload_file("../../evil name.csv", data)["path"]
    assert Path(uploaded).read_bytes() == csv_path.read_bytes()
    assert Path(uploaded).name == "evil_name.csv" and "uploads" in Path(uploaded).parts
    with pytest.raises(UserError, match="damaged"):
        api.upload_file("x.csv", "not base64!!")
    with pytest.raises(UserError, match="browser"):
        api.pick_file("csv")

    summary = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))
    assert summary["images"] == 6 and summary["groups"] == 2 and summary["refs"] == 0
    assert [p["id"] for p in api.list_projects()] == [summary["id"]]
    frames = api.group_frames(summary["id"], _group_key(api, summary["id"], "moth"))
    assert [f["pk"] for f in frames] == ["moth-0", "moth-1", "moth-2"]
    assert frames[0]["image_url"] == f"/image/{summary['id']}/moth-0"
    assert frames[0]["ref_url"] is None and frames[0]["pred_url"] is None
    assert api.delete_project(summary["id"], True)["ok"] is True
    assert api.list_projects() == []
    assert not (tmp_path / "proj" / "spec.json").exists()


def test_other_calls_go_on_while_a_deleted_projects_files_are_removed(tmp_path, monkeypatch):
    # Deleting a big project removes its files after the list is updated, outside the app's lock:
    # meanwhile the projects list loads and another project's settings can be changed.
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    doomed = api.create_project(project_config(csv_path, folder=tmp_path / "doomed"))
    kept = api.create_project(project_config(csv_path, folder=tmp_path / "kept", name="Kept"))
    started, go_on = hold_file_removal(monkeypatch)
    deleter = threading.Thread(target=api.delete_project, args=(doomed["id"], True))
    deleter.start()
    try:
        assert started.wait(timeout=60)
        answers: list = []

        def other_calls() -> None:
            answers.append([p["name"] for p in api.list_projects()])
            answers.append(api.update_project_settings(kept["id"], {"name": "Kept too"})["name"])

        caller = threading.Thread(target=other_calls, daemon=True)  # held locks would stall it
        caller.start()
        caller.join(timeout=60)
        assert answers == [["Kept"], "Kept too"], "a call waited for the file removal"
        assert deleter.is_alive()
    finally:
        go_on.set()
        deleter.join(timeout=120)
    assert not (tmp_path / "doomed").exists()
    assert [p["name"] for p in api.list_projects()] == ["Kept too"]


def test_the_app_start_finishes_a_deletion_cut_short(tmp_path, monkeypatch):
    # The app was closed while a deleted project's files were being removed: the next start
    # removes the rest of the hidden folder.
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    doomed = api.create_project(project_config(csv_path, folder=tmp_path / "doomed"))

    def closed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for the process ending midway

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(registry.shutil, "rmtree", closed)
        api.delete_project(doomed["id"], True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".doomed.")]
    # The start-up work, run here in this thread (the app runs it in a background thread).
    later = Api(mode="browser")
    later._services._background_setup(warm_up=False, wait_for=None)
    assert [p["name"] for p in later.list_projects()] == [sample.SAMPLE_CONFIG["name"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_app_info_is_fast_to_build_and_complete():
    info = Api(mode="window").app_info()
    assert info["mode"] == "window" and info["view"] is None
    assert len(info["palette"]) == 256 and info["palette"][0].startswith("#")
    assert {v["name"] for v in info["variants"]} >= {"sam2.1_hiera_tiny", "sam2.1_hiera_large"}
    assert info["candidate_defaults"]["points_per_side"] == 48
    assert "cpu" in info["devices"] and info["mask_modes"] == ["original", "position", "binary"]


def test_default_model_is_a_downloaded_one_when_the_default_is_not():
    from sst_desktop import paths
    from sst_desktop.engine.checkpoints import default_checkpoint_path

    api = Api(mode="window")
    assert api.app_info()["default_variant"] == "sam2.1_hiera_large"  # nothing downloaded
    paths.models_dir().mkdir(parents=True, exist_ok=True)
    default_checkpoint_path("sam2_hiera_small").write_bytes(b"x")
    default_checkpoint_path("sam2.1_hiera_tiny").write_bytes(b"x")
    # The newest family first, then the largest: 2.1 tiny beats 2.0 small.
    assert api.app_info()["default_variant"] == "sam2.1_hiera_tiny"
    default_checkpoint_path("sam2.1_hiera_base_plus").write_bytes(b"x")
    assert api.app_info()["default_variant"] == "sam2.1_hiera_base_plus"
    default_checkpoint_path("sam2.1_hiera_large").write_bytes(b"x")
    assert api.app_info()["default_variant"] == "sam2.1_hiera_large"


def test_label_save_reopen_run_and_use_as_reference(api_project):
    api, summary = api_project
    pid = summary["id"]
    beetles = _group_key(api, pid, "beetle")
    moths = _group_key(api, pid, "moth")
    pks = api.sample_references(pid, beetles, 1, 0)["pks"]
    assert len(pks) == 1 and pks == api.sample_references(pid, beetles, 1, 0)["pks"]
    pk = pks[0]

    frame = api.open_frame(pid, pk)
    assert (frame["width"], frame["height"]) == (96, 64) and frame["masks"] == []

    with pytest.raises(UserError, match="Unknown candidate setting"):
        api.generate_candidates(pid, pk, {"points": 3})
    job_id = api.generate_candidates(pid, pk, LOOSE)["job_id"]
    status = _wait(api, job_id)
    assert status["state"] == "done", status["error"]
    assert (
        status["kind"] == "candidates"
        and status["total"] >= 1
        and status["done"] == status["total"]
    )
    assert any("loading SAM2" in line for line in status["log"])
    found = status["result"]["masks"]
    assert found and all(m["source"] == "candidate" and m["id"] is None for m in found)
    first = found[0]
    assert first["area"] > 0 and len(first["bbox"]) == 4
    assert first["url"].startswith(f"/candidate/{pid}/{pk}/{first['index']}.png?v=")
    png, _ = api._working_mask_png(pid, pk, first["index"])
    rgba = np.array(Image.open(io.BytesIO(png)))
    assert rgba.shape == (64, 96, 4) and int((rgba[..., 3] > 0).sum()) == first["area"]

    # A click inside the dark specimen blob gives a refined mask containing that pixel.
    refined = api.refine_mask(
        pid, pk, {"points": [[50, 35]], "labels": [1], "box": None, "base_index": None}
    )
    assert refined["source"] == "refined" and refined["area"] > 0
    session = api._session(pid, pk, create=False)
    hits = api.masks_at(pid, pk, 50, 35)["indices"]
    assert all(session.get(i).contains(50, 35) for i in hits)
    assert [session.get(i).area for i in hits] == sorted(session.get(i).area for i in hits)
    covering = [m["index"] for m in found if session.get(m["index"]).full(64, 96)[35, 50]]
    assert set(covering) <= set(hits)
    again = api.refine_mask(
        pid, pk, {"points": [[50, 35], [2, 2]], "labels": [1, 0], "base_index": refined["index"]}
    )
    assert again["base_index"] == refined["index"]
    with pytest.raises(UserError, match="label"):
        api.refine_mask(pid, pk, {"points": [[1, 1]], "labels": []})

    with pytest.raises(UserError, match="at least one mask"):
        api.save_reference(pid, pk, [])
    with pytest.raises(UserError, match="between 1 and 255"):
        api.save_reference(pid, pk, [{"index": first["index"], "id": 300}])
    saved = api.save_reference(
        pid, pk, [{"index": first["index"], "id": 1}, {"index": again["index"], "id": 2}]
    )
    a = session.get(first["index"]).full(64, 96)
    b = session.get(again["index"]).full(64, 96)
    expected = np.zeros((64, 96), dtype=np.uint8)
    expected[a] = 1
    expected[b] = 2  # later assignments paint over earlier ones
    written = masks.read_mask(saved["path"])
    assert np.array_equal(written, expected)
    assert saved["ids"] == sorted({int(v) for v in np.unique(expected) if v})
    assert (
        Path(saved["path"]).name == f"{pk}.png" and Path(saved["path"]).parent.name == "ref_masks"
    )

    # Reopening (new process = new Api) shows each saved ID as a mask with its ID assigned.
    fresh = Api(mode="browser")
    reopened = fresh.open_frame(pid, pk)
    assert sorted((m["id"], m["source"]) for m in reopened["masks"]) == [
        (i, "saved") for i in saved["ids"]
    ]
    assert (
        api.list_groups(pid)[[g["key"] for g in api.list_groups(pid)].index(beetles)]["refs"] == 1
    )

    # The EXIF-rotated moth-0 is labelled at its displayed (post-EXIF) size: 64 wide, 96 high.
    moth = api.open_frame(pid, "moth-0")
    assert (moth["width"], moth["height"]) == (64, 96)
    m = api.refine_mask(pid, "moth-0", {"points": [[30, 50]], "labels": [1]})
    api.save_reference(pid, "moth-0", [{"index": m["index"], "id": 1}])
    assert masks.read_mask(api._mask_path(pid, "ref", "moth-0")).shape == (96, 64)

    job_id = api.start_run(pid, None, {"batch_size": 2, "overwrite": False, "max_frames": None})[
        "job_id"
    ]
    with pytest.raises(UserError, match="already going"):
        api.start_run(pid, None, {})
    status = _wait(api, job_id)
    assert status["state"] == "done", status["error"]
    assert status["result"]["written"] == 4 and status["done"] == status["total"] == 4
    assert status["ips"] is not None
    frames = {f["pk"]: f for f in api.group_frames(pid, moths)}
    assert frames["moth-0"]["ref_url"] and frames["moth-0"]["pred_url"] is None
    assert frames["moth-1"]["pred_url"].startswith(f"/mask/{pid}/pred/moth-1.png?color=1&v=")
    pred = masks.read_mask(api._mask_path(pid, "pred", "moth-1"))
    assert pred.shape == (64, 96)
    groups = {g["key"]: g for g in api.list_groups(pid)}
    assert groups[moths]["preds"] == 2 and groups[beetles]["preds"] == 2

    # A cancelled run stops and says so.
    job_id = api.start_run(pid, [moths], {"overwrite": True})["job_id"]
    assert api.cancel_job(job_id)["ok"] is True
    assert _wait(api, job_id)["state"] == "cancelled"

    if pred.any():
        assert api.use_as_reference(pid, "moth-1")["ok"] is True
        assert np.array_equal(masks.read_mask(api._mask_path(pid, "ref", "moth-1")), pred)
    assert api.delete_reference(pid, "moth-0")["deleted"] is True
    assert not api._mask_path(pid, "ref", "moth-0").exists()


def test_failures_become_readable_job_errors(api_project, tmp_path):
    api, summary = api_project
    pid = summary["id"]
    project = api._project(pid)
    project.spec.checkpoint = tmp_path / "missing.pt"  # as if the file was moved away
    api.open_frame(pid, "beetle-0")
    status = _wait(api, api.generate_candidates(pid, "beetle-0", LOOSE)["job_id"])
    assert status["state"] == "failed"
    assert "missing.pt does not exist" in status["error"]
    with pytest.raises(UserError, match="Unknown job"):
        api.job_status("nope")
    with pytest.raises(UserError, match="no image with primary key"):
        api.open_frame(pid, "../../etc/passwd")


def test_unexpected_errors_are_reworded_with_their_class(monkeypatch, tmp_path):
    api = Api(mode="browser")

    def broken(path, delimiter=None):
        raise KeyError("column")

    monkeypatch.setattr("sst_desktop.data.table.read_csv", broken)
    with pytest.raises(ApiError, match=r"^KeyError: 'column'$"):
        api.preview_csv(str(tmp_path / "x.csv"))


def test_refine_never_starts_a_silent_download(tmp_path):
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    pid = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))["id"]
    api.open_frame(pid, "beetle-0")
    with pytest.raises(UserError, match="not downloaded yet.*project.s Settings"):
        api.refine_mask(pid, "beetle-0", {"points": [[5, 5]], "labels": [1]})
    status = api.model_status("sam2.1_hiera_tiny")
    assert status["present"] is False and status["path"] is None  # ("loaded" is per process)


def test_project_settings_change_model_checkpoint_and_size(tmp_path, sam2_checkpoint):
    # The sample project starts on the large model at 1024 px; a user must be able to switch an
    # existing project to another model, checkpoint file and size without editing spec.json.
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    config = project_config(csv_path, folder=tmp_path / "proj", sam2="sam2.1_hiera_large")
    config["image_size"] = 1024
    pid = api.create_project(config)["id"]
    before = api.project_settings(pid)
    assert (before["sam2"], before["image_size"], before["checkpoint"]) == (
        "sam2.1_hiera_large",
        1024,
        None,
    )

    # The tiny checkpoint does not fit the large variant: refused, nothing changed.
    with pytest.raises(UserError, match="does not fit model sam2.1_hiera_large"):
        api.update_project_settings(pid, {"checkpoint": str(sam2_checkpoint)})
    with pytest.raises(UserError, match="multiple of"):
        api.update_project_settings(pid, {"sam2": "sam2.1_hiera_tiny", "image_size": 250})
    with pytest.raises(UserError, match="Unknown project setting.*'csv'"):
        api.update_project_settings(pid, {"csv": "other.csv"})
    with pytest.raises(UserError, match="does not exist"):
        api.update_project_settings(pid, {"checkpoint": str(tmp_path / "nope.pt")})
    assert api.project_settings(pid) == before

    saved = api.update_project_settings(
        pid,
        {
            "name": "Renamed",
            "sam2": "sam2.1_hiera_tiny",
            "checkpoint": str(sam2_checkpoint),
            "image_size": 256,
            "device": "cpu",
            "mask_mode": "binary",
        },
    )
    assert saved["sam2"] == "sam2.1_hiera_tiny" and saved["image_size"] == 256
    assert Path(saved["checkpoint"]) == Path(sam2_checkpoint).absolute()
    # Written to spec.json (what --infer reads) and visible in the project list under its id.
    from sst_desktop.data.spec import load_spec

    spec = load_spec(saved["spec_path"])
    assert (spec.sam2, spec.image_size, spec.device, spec.mask_mode, spec.name) == (
        "sam2.1_hiera_tiny",
        256,
        "cpu",
        "binary",
        "Renamed",
    )
    assert spec.checkpoint == Path(sam2_checkpoint).absolute()
    assert [p["name"] for p in api.list_projects() if p["id"] == pid] == ["Renamed"]

    # The new settings are what the model jobs use: candidates load the tiny checkpoint.
    api.open_frame(pid, "beetle-0")
    job = api.generate_candidates(pid, "beetle-0", LOOSE)["job_id"]
    assert _wait(api, job)["state"] == "done"

    # Back to the models folder's copy (none there): null clears the checkpoint.
    assert api.update_project_settings(pid, {"checkpoint": None})["checkpoint"] is None


def test_settings_refuse_the_projects_csv_as_checkpoint_in_plain_words(tmp_path):
    # The project's own CSV chosen as the checkpoint file: named as no checkpoint, with the fix,
    # never advised to be deleted; the settings and the CSV stay as they were.
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    pid = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))["id"]
    before, table = api.project_settings(pid), csv_path.read_bytes()
    with pytest.raises(UserError) as info:
        api.update_project_settings(pid, {"checkpoint": str(csv_path)})
    text = str(info.value)
    assert text.startswith(f"File {csv_path} is not a SAM2 checkpoint: choose a .pt checkpoint")
    assert "delete" not in text and "pop from" not in text
    assert api.project_settings(pid) == before and csv_path.read_bytes() == table


def test_an_expired_labelling_session_is_never_saved_with_stale_indices(tmp_path):
    # The UI's mask indices belong to one session; once evicted, a save must not resolve them
    # against a fresh session whose indices point at other masks.
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    pid = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))["id"]
    api.open_frame(pid, "beetle-0")
    region = np.zeros((64, 96), dtype=bool)
    region[5:15, 5:25] = True
    session = api._session(pid, "beetle-0", create=False)
    wm = session.add(region, predicted_iou=0.9, stability_score=0.9, id=None, source="candidate")
    other = np.zeros((64, 96), dtype=np.uint8)
    other[30:50, 40:80] = 1
    ref_path = api._project(pid).ref_mask_path("beetle-0")
    masks.write_mask(ref_path, other)  # saved meanwhile: a new session's mask 0
    api._drop_session(pid, "beetle-0")  # what LRU eviction does
    with pytest.raises(UserError, match="open it again"):
        api.save_reference(pid, "beetle-0", [{"index": wm.index, "id": 2}])
    with pytest.raises(UserError, match="open it again"):
        api.refine_mask(pid, "beetle-0", {"points": [[9, 9]], "labels": [1]})
    with pytest.raises(UserError, match="open it again"):
        api.generate_candidates(pid, "beetle-0", {})
    assert np.array_equal(masks.read_mask(ref_path), other)
    # Reopening starts a fresh session that the UI then uses.
    reopened = api.open_frame(pid, "beetle-0")
    assert [(m["index"], m["id"]) for m in reopened["masks"]] == [(0, 1)]


def test_labelling_sessions_are_bounded_in_bytes(tmp_path, monkeypatch):
    from sst_desktop.app import sessions as sessions_mod

    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    pid = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))["id"]
    full = np.ones((64, 96), dtype=bool)
    per_session = 40 * full.nbytes
    monkeypatch.setattr(sessions_mod, "MAX_SESSION_BYTES", 2 * per_session + 1)
    pks = ["beetle-0", "beetle-1", "beetle-2", "moth-1"]
    for pk in pks:
        api.open_frame(pid, pk)
        session = api._session(pid, pk, create=False)
        for _ in range(40):
            session.add(full, predicted_iou=None, stability_score=None, id=None, source="candidate")
        api.masks_at(pid, pk, 1, 1)  # any later call trims
    kept = [pk for pk in pks if (pid, pk) in api._sessions]
    assert kept == ["beetle-2", "moth-1"]
    assert sum(s.nbytes() for s in api._sessions.values()) <= 2 * per_session + 1
    # The session in use is kept even when it alone is over the budget.
    monkeypatch.setattr(sessions_mod, "MAX_SESSION_BYTES", 1)
    api.masks_at(pid, "moth-1", 1, 1)
    assert list(api._sessions) == [(pid, "moth-1")]


def test_refinement_logits_are_kept_for_the_latest_refinements_only(api_project, monkeypatch):
    from sst_desktop.app import sessions as sessions_mod

    monkeypatch.setattr(sessions_mod, "MAX_REFINE_LOGITS", 2)
    api, summary = api_project
    pid = summary["id"]
    api.open_frame(pid, "beetle-1")
    made = []
    base = None
    for x in (40, 45, 50, 55):
        entry = api.refine_mask(
            pid, "beetle-1", {"points": [[x, 30]], "labels": [1], "base_index": base}
        )
        made.append(entry["index"])
        base = entry["index"]
    session = api._session(pid, "beetle-1", create=False)
    with_logits = [m.index for m in session.masks if m.logits is not None]
    assert with_logits == made[-2:]
    # An older refinement still works as a base (its pixels become the mask prompt).
    again = api.refine_mask(
        pid, "beetle-1", {"points": [[42, 32]], "labels": [1], "base_index": made[0]}
    )
    assert again["base_index"] == made[0] and again["area"] > 0


def test_regenerating_keeps_the_masks_labelled_but_not_yet_saved(api_project):
    api, summary = api_project
    pid = summary["id"]
    api.open_frame(pid, "beetle-2")
    first = _wait(api, api.generate_candidates(pid, "beetle-2", LOOSE)["job_id"])["result"]
    labelled = [m["index"] for m in first["masks"][:2]]
    again = _wait(api, api.generate_candidates(pid, "beetle-2", LOOSE, labelled)["job_id"])
    indices = [m["index"] for m in again["result"]["masks"]]
    assert set(labelled) <= set(indices)
    assert not set(m["index"] for m in first["masks"][2:]) & set(indices)  # unlabelled replaced
    saved = api.save_reference(pid, "beetle-2", [{"index": labelled[0], "id": 4}])
    assert saved["ids"] == [4]
    with pytest.raises(UserError, match="'keep' must be a list of whole numbers or null"):
        api.generate_candidates(pid, "beetle-2", LOOSE, 3)


def test_group_changes_sends_only_frames_whose_mask_changed_since_the_cursor(tmp_path):
    import os

    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    pid = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))["id"]
    key = _group_key(api, pid, "moth")
    first = api.group_changes(pid, key, None)
    assert [f["pk"] for f in first["frames"]] == ["moth-0", "moth-1", "moth-2"]
    assert first["frames"] == api.group_frames(pid, key)
    project = api._project(pid)
    ids = np.zeros((64, 96), dtype=np.uint8)
    ids[10:30, 10:40] = 1
    old = masks.write_mask(project.pred_mask_path("moth-0"), ids)
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))  # written long before the cursor
    masks.write_mask(project.pred_mask_path("moth-2"), ids)
    masks.write_mask(project.pred_mask_path("beetle-1"), ids)  # another group's
    changed = api.group_changes(pid, key, first["cursor"])
    assert [f["pk"] for f in changed["frames"]] == ["moth-2"]
    assert changed["frames"][0]["pred_url"].startswith(f"/mask/{pid}/pred/moth-2.png?color=1&v=")
    assert changed["cursor"] >= first["cursor"]
    # The cursor is in microseconds: exact as a JS number, and accepted back from JSON as a float.
    assert changed["cursor"] < 2**53
    assert api.group_changes(pid, key, float(changed["cursor"] + 10**9))["frames"] == []
    with pytest.raises(UserError, match="since"):
        api.group_changes(pid, key, "yesterday")


def test_startup_project_is_the_sample_this_launch_created_and_only_once():
    import threading

    from sst_desktop.data import registry

    # The window starts the setup before the page loads, gated on "shown": a call made meanwhile
    # must wait for the sample project rather than answer null.
    shown = threading.Event()
    api = Api(mode="window")
    api._start_background_setup(warm_up=False, wait_for=shown.wait)
    answers: list[dict] = []
    caller = threading.Thread(target=lambda: answers.append(api.startup_project()))
    caller.start()
    shown.set()
    caller.join(timeout=60)
    sample = registry.list_projects()
    assert len(sample) == 1
    assert answers == [{"project_id": sample[0]["id"]}]
    assert api.startup_project() == {"project_id": None}  # once: a reload shows the list

    # The next launch on the same data dir created nothing: it opens on the projects list.
    again = Api(mode="browser")
    again._start_background_setup(warm_up=False)
    assert again.startup_project() == {"project_id": None}
    assert len(registry.list_projects()) == 1
    # No background setup at all (an in-process server): null at once.
    assert Api(mode="browser").startup_project() == {"project_id": None}
