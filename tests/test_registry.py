"""Project registry: list, register, forget, delete, the sample project (sst_desktop.data.registry)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sst_desktop import paths
from sst_desktop.data import registry
from sst_desktop.data.project import Project
from sst_desktop.errors import SpecError, UserError
from tests._project_helpers import TEMPLATE, hold_file_removal, make_dataset


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path)


def _create(dataset, name="Beetles", **kwargs) -> Project:
    csv_path, image_root = dataset
    project, _ = registry.create_project(
        name, csv_path, "pk", TEMPLATE, image_root, ["Dataset"], **kwargs
    )
    return project


def _id(project: Project) -> str:
    return registry.project_id_for(project.spec_path)


def test_empty_registry():
    assert registry.list_projects() == []
    assert not paths.registry_file().exists()  # listing never creates the file


def test_register_is_idempotent_and_lists_entries(dataset):
    p = _create(dataset)
    (entry,) = registry.list_projects()
    assert entry["name"] == "Beetles" and entry["root"] == str(p.root)
    assert entry["created"] and entry["created_folder"] is True and entry["missing"] is False
    again = registry.register(p.spec_path)
    assert again["id"] == entry["id"]
    assert len(registry.list_projects()) == 1
    # The registry file is plain JSON in the data folder.
    data = json.loads(paths.registry_file().read_text())
    assert data["version"] == 1 and data["projects"][0]["id"] == entry["id"]


def test_register_an_existing_spec_and_forget(dataset, tmp_path):
    p = _create(dataset, folder=tmp_path / "elsewhere")
    assert registry.forget(_id(p)) is True
    assert registry.forget(_id(p)) is False
    assert registry.list_projects() == []
    assert (p.root / "spec.json").is_file()  # forgetting keeps files
    entry = registry.register(p.root)  # the folder is enough
    assert entry["spec_path"] == str(p.root / "spec.json")
    assert entry["created_folder"] is False


def test_register_rejects_an_invalid_spec(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError):
        registry.register(bad)
    assert registry.list_projects() == []


def test_missing_projects_are_marked(dataset):
    p = _create(dataset)
    shutil.rmtree(p.root)
    (entry,) = registry.list_projects()
    assert entry["missing"] is True


def test_delete_without_files_keeps_the_folder(dataset):
    p = _create(dataset)
    result = registry.delete_project(_id(p))
    assert result["ok"] and result["deleted"] == []
    assert registry.list_projects() == [] and p.root.is_dir()


def test_delete_with_files_removes_only_project_entries(dataset):
    p = _create(dataset)
    (p.root / "ref_masks" / "b1.png").write_bytes(b"x")
    (p.root / "runs").mkdir()
    (p.root / "ref_masks" / ".b2.png.1.tmp").write_bytes(b"")
    (p.root / ".spec.json.x.tmp").write_bytes(b"")
    (p.root / "notes.txt").write_text("mine")
    result = registry.delete_project(_id(p), delete_files=True)
    assert result["kept"] == ["notes.txt"]
    assert sorted(x.name for x in p.root.iterdir()) == ["notes.txt"]
    assert registry.list_projects() == []


def test_delete_with_files_removes_the_empty_folder(dataset):
    p = _create(dataset)
    result = registry.delete_project(_id(p), delete_files=True)
    assert not p.root.exists() and str(p.root) in result["deleted"]
    assert paths.projects_dir().is_dir()


def test_delete_refuses_folders_it_did_not_create(dataset, tmp_path):
    folder = tmp_path / "user folder"
    folder.mkdir()
    (folder / "data.txt").write_text("not ours")
    p = _create(dataset, folder=folder)
    with pytest.raises(UserError, match="did not create"):
        registry.delete_project(_id(p), delete_files=True)
    assert (folder / "data.txt").is_file() and (folder / "spec.json").is_file()
    assert len(registry.list_projects()) == 1  # still listed: nothing happened


def test_delete_refuses_a_folder_without_spec(dataset):
    p = _create(dataset)
    (p.root / "spec.json").unlink()
    with pytest.raises(UserError, match="no spec.json"):
        registry.delete_project(_id(p), delete_files=True)
    assert (p.root / "master.csv").is_file()


def test_unknown_id():
    with pytest.raises(UserError, match="No project with id 'nope'"):
        registry.delete_project("nope")


def test_corrupt_registry_is_set_aside_not_lost(dataset):
    paths.registry_file().write_text("{broken")
    assert registry.list_projects() == []
    kept = list(paths.data_dir().glob("projects.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{broken"
    _create(dataset)
    assert len(registry.list_projects()) == 1


def test_ids_are_url_safe_and_distinct(dataset):
    a = _create(dataset, name="Käfer / moths?")
    b = _create(dataset, name="Käfer / moths?")
    assert _id(a) != _id(b)
    for pid in (_id(a), _id(b)):
        assert all(c.isalnum() or c == "-" for c in pid)


def test_ensure_sample_project_with_a_stand_in_dataset(dataset, monkeypatch):
    # The registry's part: create once when nothing is registered, never again after.
    from sst_desktop.data import sample

    csv_path, image_root = dataset
    monkeypatch.setattr(sample, "sample_csv_path", lambda: csv_path)
    monkeypatch.setattr(sample, "sample_image_root", lambda: image_root)
    monkeypatch.setattr(
        sample,
        "SAMPLE_CONFIG",
        {"name": "Sample", "primary_key": "pk", "img_path": TEMPLATE, "group_by": ["Dataset"]},
    )
    entry = registry.ensure_sample_project()
    assert entry is not None and entry["name"] == "Sample"
    assert registry.ensure_sample_project() is None
    assert len(registry.list_projects()) == 1


def test_ensure_sample_project_with_the_real_sample(tmp_path, monkeypatch):
    from sst_desktop.data import sample

    if not sample.sample_csv_path().is_file():
        # Checkout without the generated data: generate it with the real generator.
        sample.generate(tmp_path / "sample_data")
        monkeypatch.setattr(sample, "sample_dir", lambda: tmp_path / "sample_data")
    entry = registry.ensure_sample_project()
    assert entry is not None and entry["name"] == sample.SAMPLE_CONFIG["name"]
    p = Project.open(entry["spec_path"])
    assert len(p.groups()) == 2
    assert all(f.image_path.is_file() for f in p.frames())
    assert p.status() == {"images": len(sample.SAMPLE_IMAGES), "refs": 0, "preds": 0, "stale": 0}


_REGISTER_MANY = """
import sys
import threading
from sst_desktop.data import registry
for spec in sys.argv[1:]:
    registry.register(spec)
"""


def test_processes_registering_at_once_lose_no_project(dataset, tmp_path):
    # Three processes (say the app, a CLI run and a second window) read-modify-write projects.json at the same
    # time: each registration must survive the other's writes.
    csv_path, image_root = dataset
    specs = [
        Project.create(
            f"P{i}", csv_path, "pk", TEMPLATE, image_root, ["Dataset"], folder=tmp_path / f"p{i}"
        ).spec_path
        for i in range(48)
    ]
    procs = [
        subprocess.Popen([sys.executable, "-c", _REGISTER_MANY, *map(str, specs[k::3])])
        for k in range(3)
    ]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    listed = {Path(e["spec_path"]) for e in registry.list_projects()}
    assert listed == {Path(s) for s in specs}


def test_a_registry_that_cannot_be_read_is_never_set_aside(dataset, monkeypatch):
    # On Windows a file being replaced by another process refuses reads for a moment: that is
    # retried, and a refusal that lasts is an error, not corruption (the list must not vanish).
    _create(dataset)
    registry_path = paths.registry_file()
    real_read_text = Path.read_text
    refusals = {"left": 2}

    def flaky_read_text(self, *args, **kwargs):
        if self == registry_path and refusals["left"]:
            refusals["left"] -= 1
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", flaky_read_text)
    assert [e["name"] for e in registry.list_projects()] == ["Beetles"]  # retried
    refusals["left"] = 10**6
    with pytest.raises(UserError, match="cannot be read"):
        registry.list_projects()
    assert registry_path.is_file()
    assert not list(paths.data_dir().glob("projects.json.corrupt-*"))


class _Crash(BaseException):
    """Stands for the process dying in the middle of removing files."""


def test_removing_a_projects_files_does_not_hold_the_list(dataset, tmp_path, monkeypatch):
    # A project folder can hold thousands of mask PNGs: while its files are being removed, this
    # process lists projects and another process registers one, neither waiting for the removal.
    p = _create(dataset)
    for i in range(50):
        (p.root / "pred_masks" / f"m{i}.png").write_bytes(b"x")
    csv_path, image_root = dataset
    other = Project.create(
        "Other", csv_path, "pk", TEMPLATE, image_root, ["Dataset"], folder=tmp_path / "other"
    )
    started, go_on = hold_file_removal(monkeypatch)
    result: dict = {}
    deleter = threading.Thread(
        target=lambda: result.update(registry.delete_project(_id(p), delete_files=True))
    )
    deleter.start()
    try:
        assert started.wait(timeout=60)
        listed: list = []
        reader = threading.Thread(target=lambda: listed.append(registry.list_projects()))
        reader.daemon = True  # with the list held it would wait for the removal
        reader.start()
        reader.join(timeout=60)
        assert listed == [[]], "listing waited for the file removal"
        registering = subprocess.run(
            [sys.executable, "-c", _REGISTER_MANY, str(other.spec_path)], timeout=120
        )
        assert registering.returncode == 0
        # Both finished while the removal is still held, and the folder is already out of sight.
        assert deleter.is_alive() and not p.root.exists()
    finally:
        go_on.set()
        deleter.join(timeout=120)
    assert result["deleted"][-1] == str(p.root) and result["kept"] == []
    assert str(p.root / "pred_masks") in result["deleted"]
    assert [e["name"] for e in registry.list_projects()] == ["Other"]
    assert list(p.root.parent.iterdir()) == []  # no hidden leftovers
    assert "deleting" not in json.loads(paths.registry_file().read_text())


def test_a_deletion_cut_short_lists_nothing_and_is_finished_later(dataset, monkeypatch):
    p = _create(dataset)
    (p.root / "ref_masks" / "b1.png").write_bytes(b"x")
    (p.root / "notes.txt").write_text("mine")

    def crash(*args, **kwargs):
        raise _Crash

    with monkeypatch.context() as patch, pytest.raises(_Crash):
        patch.setattr(registry.shutil, "rmtree", crash)
        registry.delete_project(_id(p), delete_files=True)
    # No listed project points at the half-removed folder, which waits under a hidden name.
    assert registry.list_projects() == []
    (aside,) = [x for x in p.root.parent.iterdir() if x.is_dir()]
    assert aside.name.startswith(f".{p.root.name}.") and (aside / "ref_masks" / "b1.png").is_file()
    assert registry.finish_interrupted_deletions() == 1
    # The project's entries are gone; the user's own file is back at the folder's own name.
    assert sorted(x.name for x in p.root.parent.iterdir()) == [p.root.name]
    assert sorted(x.name for x in p.root.iterdir()) == ["notes.txt"]
    assert registry.finish_interrupted_deletions() == 0
    assert registry.list_projects() == []


def test_a_folder_that_cannot_be_moved_aside_is_left_listed_and_whole(dataset, monkeypatch):
    p = _create(dataset)
    (p.root / "ref_masks" / "b1.png").write_bytes(b"x")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(registry.os, "rename", refuse)
    with pytest.raises(UserError, match="cannot be deleted"):
        registry.delete_project(_id(p), delete_files=True)
    assert [e["id"] for e in registry.list_projects()] == [_id(p)]
    assert (p.root / "spec.json").is_file() and (p.root / "ref_masks" / "b1.png").is_file()
    assert sorted(x.name for x in p.root.parent.iterdir()) == [p.root.name]
    assert "deleting" not in json.loads(paths.registry_file().read_text())


# Deletes a project in a process that dies (as if killed or the power failed) at the folder's
# rename: right "before" it (nothing renamed) or right "after" it.
_DELETE_AND_DIE = """
import os
import sys
from sst_desktop.data import registry
project_id, point = sys.argv[1:]
real_rename = os.rename

def rename_and_die(src, dst):
    if point == "after":
        real_rename(src, dst)
    os._exit(9)

os.rename = rename_and_die
registry.delete_project(project_id, delete_files=True)
"""


def _delete_and_die(project: Project, point: str) -> None:
    died = subprocess.run([sys.executable, "-c", _DELETE_AND_DIE, _id(project), point], timeout=120)
    assert died.returncode == 9


def _records() -> list:
    return json.loads(paths.registry_file().read_text()).get("deleting", [])


def _deletion_locks() -> list:
    return sorted((paths.data_dir() / "deleting").glob("*"))


def test_a_process_dying_right_after_the_rename_leaves_the_files_to_the_next_start(dataset):
    p = _create(dataset)
    (p.root / "ref_masks" / "b1.png").write_bytes(b"x")
    _delete_and_die(p, "after")
    # Off the list; the folder waits under its hidden name, with nothing else beside it.
    assert registry.list_projects() == []
    (aside,) = p.root.parent.iterdir()
    assert aside.name.startswith(f".{p.root.name}.deleting-") and aside.is_dir()
    assert registry.finish_interrupted_deletions() == 1
    assert list(p.root.parent.iterdir()) == []
    assert _records() == [] and _deletion_locks() == []
    assert registry.list_projects() == []


def test_a_process_dying_right_before_the_rename_loses_no_project(dataset):
    p = _create(dataset)
    other = _create(dataset, name="Weevils")
    (p.root / "ref_masks" / "b1.png").write_bytes(b"x")
    listed = registry.list_projects()
    _delete_and_die(p, "before")
    # The next start puts the project back where it was in the list, files untouched.
    assert registry.finish_interrupted_deletions() == 0
    assert registry.list_projects() == listed
    assert [e["id"] for e in listed] == [_id(p), _id(other)]
    assert (p.root / "ref_masks" / "b1.png").read_bytes() == b"x"
    assert sorted(x.name for x in p.root.parent.iterdir()) == sorted([p.root.name, other.root.name])
    assert _records() == [] and _deletion_locks() == []
    # And it can be deleted after all.
    assert registry.delete_project(_id(p), delete_files=True)["kept"] == []
    assert [e["id"] for e in registry.list_projects()] == [_id(other)]


def test_a_deletion_whose_folder_is_out_of_reach_is_finished_when_it_is_back(dataset):
    # The drive holding the projects is not mounted at the next start: the record is kept.
    p = _create(dataset)
    _delete_and_die(p, "after")
    drive = p.root.parent
    away = drive.with_name(f"{drive.name}-unmounted")
    drive.rename(away)
    assert registry.finish_interrupted_deletions() == 0
    assert len(_records()) == 1
    away.rename(drive)
    assert registry.finish_interrupted_deletions() == 1
    assert list(drive.iterdir()) == [] and _records() == []


def test_deletions_recorded_by_an_earlier_version_are_finished(dataset):
    # Earlier versions recorded only the hidden folder's path, after renaming it.
    p = _create(dataset)
    registry.forget(_id(p))
    trash = p.root.with_name(f".{p.root.name}.deleting-0123abcd")
    p.root.rename(trash)
    gone = p.root.with_name(".gone.deleting-4567cdef")  # removed, its record left behind
    data = json.loads(paths.registry_file().read_text())
    data["deleting"] = [str(trash), str(gone)]
    paths.registry_file().write_text(json.dumps(data))
    assert registry.finish_interrupted_deletions() == 1
    assert list(p.root.parent.iterdir()) == []
    assert _records() == [{"trash": str(gone)}]  # out of reach, maybe: kept
    assert registry.list_projects() == []
