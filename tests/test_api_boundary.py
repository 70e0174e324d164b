"""The API boundary: argument types checked in one place, and paths limited to chosen folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sst_desktop.app.access import ALLOWED_DIRS_ENV, PathPolicy
from sst_desktop.app.arguments import check_arguments
from sst_desktop.errors import UserError


def start_run(
    self, project_id: str, group_keys: list[str] | None = None, options: dict | None = None
) -> None:
    """A method shaped like the API's."""


def sample(self, project_id: str, n: int, seed: int, flag: bool = False, extra: Any = None):
    """Another."""


def test_argument_types_are_checked_before_the_method_runs():
    check_arguments(start_run, ["p1", ["set=a", "set=b"], {"overwrite": True}])
    check_arguments(start_run, ["p1", None])
    check_arguments(start_run, ["p1"])
    with pytest.raises(UserError, match="'group_keys' must be a list of text or null, not text"):
        check_arguments(start_run, ["p1", "set=a"])  # was split into characters
    with pytest.raises(UserError, match="'group_keys' must be a list of text or null, not a list"):
        check_arguments(start_run, ["p1", [1, 2]])
    with pytest.raises(UserError, match="'project_id' must be text, not an object"):
        check_arguments(start_run, [{"a": 1}])
    with pytest.raises(UserError, match="'options' must be an object or null, not a list"):
        check_arguments(start_run, ["p1", None, []])
    with pytest.raises(UserError, match="missing argument"):
        check_arguments(start_run, [])
    with pytest.raises(UserError, match="takes at most 3 argument"):
        check_arguments(start_run, ["p", None, None, 4])

    check_arguments(sample, ["p", 3, "7", True, {"x": [1]}])  # numbers may come as form text
    with pytest.raises(UserError, match="'n' must be a whole number, not true/false"):
        check_arguments(sample, ["p", True, 1])
    with pytest.raises(UserError, match="'flag' must be true or false, not a number"):
        check_arguments(sample, ["p", 1, 1, 1])


def test_paths_are_limited_to_chosen_folders(tmp_path, monkeypatch, isolated_data_dir):
    monkeypatch.delenv(ALLOWED_DIRS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    policy = PathPolicy()
    inside = tmp_path / "home" / "data.csv"
    assert policy.check(inside, "CSV file") == inside
    assert policy.check(isolated_data_dir / "uploads" / "x.csv", "CSV file")
    for outside in ("/etc/shadow", "/etc/passwd", tmp_path / "other" / "x.csv"):
        with pytest.raises(UserError, match="outside the folders this app may open"):
            policy.check(outside, "CSV file")
    # A link inside a chosen folder must not lead out of it.
    link = tmp_path / "home" / "link.csv"
    os.symlink("/etc/passwd", link)
    with pytest.raises(UserError, match="outside"):
        policy.check(link, "CSV file")
    with pytest.raises(UserError, match="outside"):
        policy.check(tmp_path / "home" / ".." / "other" / "x.csv", "CSV file")

    policy.allow(tmp_path / "other")  # --allow, or a folder picked in the window's dialog
    assert policy.check(tmp_path / "other" / "x.csv", "CSV file")
    monkeypatch.setenv(ALLOWED_DIRS_ENV, os.pathsep.join(["/srv/a", str(tmp_path / "env")]))
    assert policy.check(tmp_path / "env" / "sub" / "y.csv", "CSV file")
    assert PathPolicy([tmp_path / "cli"]).check(Path(tmp_path / "cli" / "z"), "folder")
