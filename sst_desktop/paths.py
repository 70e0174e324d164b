"""Where SST Desktop keeps its data: projects, the project registry, models and caches."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "sst-desktop"

# Tests and portable installs point the whole app at another folder with this variable.
DATA_DIR_ENV = "SST_DESKTOP_DATA_DIR"


def data_dir() -> Path:
    """The per-user data folder (platformdirs' user data dir, or $SST_DESKTOP_DATA_DIR)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def projects_dir() -> Path:
    """Default parent folder of new projects."""
    return _subdir("projects")


def models_dir() -> Path:
    """Folder where SAM2 checkpoints are looked up and downloaded to."""
    return _subdir("models")


def cache_dir() -> Path:
    """Folder for disposable caches such as thumbnails."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        path = Path(override).expanduser() / "cache"
    else:
        path = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_file() -> Path:
    """JSON file listing the known projects."""
    return data_dir() / "projects.json"


def resource_dir(name: str) -> Path:
    """A folder shipped with the app ("ui" or "sample_data"), from a source tree, wheel or bundle."""
    here = Path(__file__).resolve().parent
    candidates = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates += [Path(bundle) / name, Path(bundle) / "sst_desktop" / name]
    candidates += [here / name, here.parent / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"SST Desktop resource folder {name!r} not found in {candidates}")


def _subdir(name: str) -> Path:
    path = data_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
