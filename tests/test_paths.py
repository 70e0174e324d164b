"""App folders: the data-dir override, sub-folders, and shipped resources."""

from __future__ import annotations

import sys

import pytest

from sst_desktop import paths


def test_data_dir_override_moves_every_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "d"))
    assert paths.data_dir() == tmp_path / "d"
    assert paths.projects_dir() == tmp_path / "d" / "projects"
    assert paths.models_dir() == tmp_path / "d" / "models"
    assert paths.cache_dir() == tmp_path / "d" / "cache"
    assert paths.registry_file() == tmp_path / "d" / "projects.json"
    assert all(p.is_dir() for p in (paths.projects_dir(), paths.models_dir(), paths.cache_dir()))


def test_without_override_platformdirs_decides(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "pd"))
    assert paths.data_dir() == tmp_path / "pd"


def test_resources_are_found_in_the_source_tree_and_in_a_bundle(tmp_path, monkeypatch):
    assert (paths.resource_dir("ui") / "index.html").is_file()
    assert (paths.resource_dir("sample_data") / "sample.csv").is_file()
    # A PyInstaller bundle unpacks data under sys._MEIPASS; that copy wins.
    (tmp_path / "ui").mkdir()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert paths.resource_dir("ui") == tmp_path / "ui"
    with pytest.raises(FileNotFoundError):
        paths.resource_dir("no_such_resource")
