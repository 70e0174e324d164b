"""Which files the app's API may open by path: only inside folders the user chose.

Anyone holding the launch token can call the API, and with `--serve --host` that may be another
user of a shared machine; so a path in an API call (a CSV to preview, an image folder, a
checkpoint, a new project's folder) must lie, after resolving links, inside one of:
the app's data folder, the user's home, the folders named on the command line (`--allow`,
the `--project` spec's folder, the `--view` masks' projects), `$SST_DESKTOP_ALLOWED_DIRS`, the
folders of registered projects, and files or folders the user picked in the window's dialogs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from sst_desktop import paths
from sst_desktop.data import registry
from sst_desktop.errors import UserError

ALLOWED_DIRS_ENV = "SST_DESKTOP_ALLOWED_DIRS"


def _real(path: str | os.PathLike) -> Path:
    """The absolute path with every link resolved (a link inside must not lead outside)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class PathPolicy:
    """The folders API calls may name; thread-safe, grows when the user picks or registers more."""

    def __init__(self, extra: Iterable[str | os.PathLike] = ()) -> None:
        self._chosen: list[Path] = []
        self._lock = threading.Lock()
        for folder in extra:
            self.allow(folder)

    def allow(self, path: str | os.PathLike) -> None:
        """Let API calls name `path` and everything under it (a file: that file only)."""
        real = _real(path)
        with self._lock:
            if real not in self._chosen:
                self._chosen.append(real)

    def roots(self) -> list[Path]:
        """Every allowed folder (and file) now."""
        fixed = [paths.data_dir(), Path.home()]
        env = os.environ.get(ALLOWED_DIRS_ENV, "")
        fixed += [Path(p) for p in env.split(os.pathsep) if p.strip()]
        with self._lock:
            chosen = list(self._chosen)
        return [*(_real(p) for p in fixed), *chosen, *_project_roots()]

    def check(self, path: str | os.PathLike, what: str) -> Path:
        """`path` when it lies inside an allowed folder; else a UserError naming it and the rule."""
        text = os.fspath(path)
        if not str(text).strip():
            raise UserError(f"{what}: no path given.")
        real = _real(text)
        if any(_inside(real, root) for root in self.roots()):
            return Path(os.path.abspath(os.path.expanduser(text)))
        raise UserError(
            f"{what} {text} is outside the folders this app may open (its data folder, your "
            f"home folder, folders given with --allow or in {ALLOWED_DIRS_ENV}, and files you "
            "picked): move the file there, or start sst-desktop with --allow FOLDER."
        )

    def check_image(self, path: str | os.PathLike, images_root: Path, pk: str) -> Path:
        """An image a project's CSV names, when it lies in the project's image folder or an
        allowed folder: a CSV (uploadable through the browser) must not open other files."""
        real = _real(path)
        if _inside(real, _real(images_root)) or any(_inside(real, r) for r in self.roots()):
            return Path(path)
        raise UserError(
            f"Image {path} of row {pk!r} lies outside the project's image folder {images_root} "
            "and the folders this app may open: move it there, or start sst-desktop with "
            f"--allow {Path(path).parent}."
        )


def _project_roots() -> list[Path]:
    """Folders of registered projects (the user chose them when creating or opening them)."""
    try:
        entries = registry.list_projects()
    except Exception:  # an unreadable registry must not open anything more
        return []
    roots = []
    for entry in entries:
        root = entry.get("root")
        if root:
            roots.append(_real(root))
    return roots


_POLICY = PathPolicy()


def policy() -> PathPolicy:
    """This process's policy (the command line and the window's dialogs add to it)."""
    return _POLICY
