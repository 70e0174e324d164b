"""The list of known projects: a JSON file in the app data folder, written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

from sst_desktop import paths
from sst_desktop.data import sample
from sst_desktop.data.project import Project
from sst_desktop.data.spec import SPEC_FILE_NAME, load_spec
from sst_desktop.data.table import slugify
from sst_desktop.errors import UserError
from sst_desktop.fileio import atomic_write_json

log = logging.getLogger(__name__)

REGISTRY_VERSION = 1
# What a project folder made by SST Desktop holds; deleting a project removes only these.
PROJECT_ENTRIES = ("spec.json", "master.csv", "ref_masks", "pred_masks", "runs")
# A folder being deleted is taken off the list, recorded under "deleting" with its entry, then
# renamed to ".<name>.deleting-<hex>" beside it: its files are removed without holding the list,
# and a crash never leaves a listed, half-removed project nor an unlisted, whole one.
_ASIDE_MARK = ".deleting-"
_ASIDE_NAME = re.compile(r"\.(?P<name>.+)\.deleting-[0-9a-f]{8}")

# Server threads share the registry; read-modify-write under one lock.
_LOCK = threading.RLock()
# Several processes (the app, a CLI run, a second window) may write it too: a file lock beside
# it serialises them. One FileLock object per path, so nested use in one thread is re-entrant.
_FILE_LOCKS: dict[str, filelock.FileLock] = {}


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the registry against other threads and other processes."""
    with _LOCK:
        path = paths.registry_file()
        lock = _FILE_LOCKS.get(str(path))
        if lock is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = _FILE_LOCKS[str(path)] = filelock.FileLock(f"{path}.lock")
        with lock:
            yield


def _norm(path: str | os.PathLike) -> str:
    """Absolute, normalised path text used to compare spec paths."""
    return os.path.normcase(os.path.abspath(os.path.expanduser(str(path))))


def project_id_for(spec_path: str | os.PathLike, name: str | None = None) -> str:
    """Registered id of a spec, or the id it would get: readable slug + hash of its path."""
    key = _norm(spec_path)
    for entry in _read()["projects"]:
        if _norm(entry["spec_path"]) == key:
            return entry["id"]
    return _new_id(key, name)


def _new_id(norm_spec_path: str, name: str | None) -> str:
    digest = hashlib.sha1(norm_spec_path.encode("utf-8")).hexdigest()[:8]
    slug = slugify(name or Path(norm_spec_path).parent.name, max_len=32) or "project"
    return f"{slug}-{digest}"


def _read() -> dict[str, Any]:
    """The registry's content; a corrupt file is set aside (never deleted) and an empty one used."""
    path = paths.registry_file()
    empty: dict[str, Any] = {"version": REGISTRY_VERSION, "projects": []}
    try:
        data = json.loads(_read_text(path))
    except FileNotFoundError:
        return empty
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("projects"), list)
        or not all(
            isinstance(e, dict)
            and isinstance(e.get("id"), str)
            and isinstance(e.get("spec_path"), str)
            for e in data["projects"]
        )
    ):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(f"{path.name}.corrupt-{stamp}"))
        return empty
    return data


def _read_text(path: Path, attempts: int = 10) -> str:
    """The file's text; a read refused while another process replaces it (Windows) is retried,
    and one that keeps failing is an error, never a reason to set the file aside."""
    for attempt in range(attempts):
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise
        except PermissionError:
            if attempt == attempts - 1:
                raise UserError(
                    f"The project list {path} cannot be read (permission denied): check the "
                    "file's permissions, or close other SST Desktop processes and try again."
                ) from None
            time.sleep(0.05)
        except OSError as exc:
            raise UserError(f"The project list {path} cannot be read: {exc}.") from None
    raise AssertionError("unreachable")


def _write(data: dict[str, Any]) -> None:
    atomic_write_json(paths.registry_file(), data)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    spec_path = Path(entry["spec_path"])
    return {
        "id": entry["id"],
        "name": entry.get("name") or spec_path.parent.name,
        "spec_path": str(spec_path),
        "root": entry.get("root") or str(spec_path.parent),
        "created": entry.get("created"),
        "created_folder": bool(entry.get("created_folder")),
        "missing": not spec_path.is_file(),
    }


def list_projects() -> list[dict[str, Any]]:
    """Known projects, newest registration last: {id, name, spec_path, root, created, missing}."""
    with _LOCK:  # the file is replaced atomically: reading needs no lock against other processes
        return [_public(e) for e in _read()["projects"]]


def get(project_id: str) -> dict[str, Any]:
    """The entry of a project id; UserError if unknown."""
    for entry in list_projects():
        if entry["id"] == project_id:
            return entry
    raise UserError(f"No project with id {project_id!r} is registered: pick one from the list.")


def register(
    spec_path: str | os.PathLike, name: str | None = None, *, created_folder: bool = False
) -> dict[str, Any]:
    """Add a spec.json to the list (idempotent: a known spec keeps its id); returns its entry."""
    spec_path = Path(os.path.abspath(os.path.expanduser(str(spec_path))))
    if spec_path.is_dir():
        spec_path = spec_path / SPEC_FILE_NAME
    spec = load_spec(spec_path)  # only valid specs are registered
    name = name or spec.display_name
    with _locked():
        data = _read()
        key = _norm(spec_path)
        for entry in data["projects"]:
            if _norm(entry["spec_path"]) == key:
                changed = entry.get("name") != name or entry.get("root") != str(spec.root)
                entry["name"], entry["root"] = name, str(spec.root)
                if changed:
                    _write(data)
                return _public(entry)
        entry = {
            "id": _new_id(key, name),
            "name": name,
            "spec_path": str(spec_path),
            "root": str(spec.root),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_folder": created_folder,
        }
        taken = {e["id"] for e in data["projects"]}
        base, n = entry["id"], 1
        while entry["id"] in taken:  # a hash collision or a re-registered moved spec
            n += 1
            entry["id"] = f"{base}-{n}"
        data["projects"].append(entry)
        _write(data)
        return _public(entry)


def forget(project_id: str) -> bool:
    """Remove a project from the list (its files stay); False if it was not listed."""
    with _locked():
        data = _read()
        kept = [e for e in data["projects"] if e["id"] != project_id]
        if len(kept) == len(data["projects"]):
            return False
        data["projects"] = kept
        _write(data)
        return True


def delete_project(project_id: str, delete_files: bool = False) -> dict[str, Any]:
    """Forget a project; with `delete_files`, also remove the files SST Desktop made for it.

    Files are removed only from a folder this app created (recorded at creation) that still
    holds spec.json at the registered place, and only the entries a project consists of
    (spec.json, master.csv, ref_masks/, pred_masks/, runs/); anything else stays, and so does
    the folder then. Returns {ok, deleted: [paths], kept: [names]}.
    """
    aside = unregister(project_id, delete_files=delete_files)
    if aside is None:
        return {"ok": True, "deleted": [], "kept": []}
    return {"ok": True, **aside.remove()}


def unregister(project_id: str, *, delete_files: bool = False) -> SetAside | None:
    """Take a project off the list; with `delete_files`, then rename its folder to a hidden name
    beside it and return that for `SetAside.remove`. The list is held only for this part."""
    with _locked():
        entry = get(project_id)
        if not delete_files:
            forget(project_id)
            return None
        root = Path(entry["root"])
        spec_path = Path(entry["spec_path"])
        if not entry["created_folder"]:
            raise UserError(
                f"Project {entry['name']!r} lives in {root}, a folder SST Desktop did not "
                f"create: its files were left alone; delete them yourself or forget the project."
            )
        if spec_path != root / "spec.json" or not spec_path.is_file():
            raise UserError(
                f"Project folder {root} has no spec.json any more, so it is not deleted: "
                f"forget the project instead."
            )
        trash = root.with_name(f".{root.name}{_ASIDE_MARK}{secrets.token_hex(4)}")
        aside = SetAside(root=root, trash=trash, lock=_deletion_lock(trash))
        aside.lock.acquire()  # before it is recorded: a start-up clean-up must skip it
        try:
            # One write before the rename: off the list, and recorded with its entry, so a crash
            # at any point leaves either the folder to put back on the list or one to remove.
            data = _read()
            index = next(i for i, e in enumerate(data["projects"]) if e["id"] == project_id)
            record = {
                "trash": str(trash),
                "root": str(root),
                "entry": data["projects"].pop(index),
                "index": index,
            }
            data["deleting"] = [*_pending(data), record]
            _write(data)
            try:
                os.rename(root, trash)  # one step: the folder is either whole or out of sight
            except OSError as exc:
                _restore(record)
                raise UserError(
                    f"Project folder {root} cannot be deleted ({exc.strerror or exc}): close "
                    "programs using its files and try again; the project stays in the list."
                ) from None
        except BaseException:
            aside.release()
            raise
        return aside


def _deletion_lock(trash: Path, timeout: float = -1) -> filelock.FileLock:
    """The lock held while a set-aside folder is removed: a file in the app data folder, so no
    lock file shows up beside the user's project folders."""
    digest = hashlib.sha1(str(trash).encode("utf-8")).hexdigest()[:16]
    folder = paths.data_dir() / "deleting"
    folder.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(folder / f"{digest}.lock"), timeout=timeout)


@dataclass
class SetAside:
    """A deleted project's folder, off the list and renamed; `remove()` deletes its files."""

    root: Path  # where the folder was
    trash: Path  # its hidden name meanwhile
    lock: filelock.FileLock  # held until the removal ends, so only one process removes it

    def remove(self) -> dict[str, list[str]]:
        """Remove the project's entries (no list lock held); {deleted, kept} as under `root`."""
        try:
            result = _empty_set_aside(self.trash, self.root)
        except OSError as exc:
            raise UserError(
                f"The project is off the list, but some of its files could not be removed "
                f"({exc}): they are in {self.trash}, removed again when SST Desktop next starts."
            ) from None
        finally:
            self.release()
        _drop_pending(self.trash)
        return result

    def release(self) -> None:
        """Let go of the folder's lock and remove the lock file."""
        self.lock.release()
        Path(self.lock.lock_file).unlink(missing_ok=True)


def finish_interrupted_deletions() -> int:
    """Settle the deletions cut short (a crash, a killed process); how many were finished.

    A folder set aside is removed. A folder not renamed yet (the crash came first) is put back on
    the list. A record whose folder is nowhere (a drive not mounted) is kept for a later start.
    Folders another process is removing right now are skipped."""
    with _locked():
        pending = _pending(_read())
    finished = 0
    for record in pending:
        trash = Path(record["trash"])
        match = _ASIDE_NAME.fullmatch(trash.name)
        if match is None:  # not a name this module gives: never touch it
            _drop_pending(trash)
            continue
        root = Path(record.get("root") or trash.with_name(match["name"]))
        aside = SetAside(root=root, trash=trash, lock=_deletion_lock(trash, timeout=0))
        try:
            aside.lock.acquire()
        except filelock.Timeout:
            continue
        if not trash.is_dir():
            try:
                if "root" in record and (root / SPEC_FILE_NAME).is_file():
                    _restore(record)  # never renamed: the project stays
                elif root.is_dir():  # emptied and given its name back; only the record was left
                    _drop_pending(trash)
                else:
                    log.warning("a deleted project's folder %s is not there: kept for later", trash)
            except UserError as exc:  # say, its spec.json no longer loads: tried again later
                log.warning("%s", exc)
            finally:
                aside.release()
            continue
        try:
            aside.remove()
        except UserError as exc:  # kept on the record: tried again at the next start
            log.warning("%s", exc)
            continue
        finished += 1
    return finished


def _pending(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The deletions recorded in the list whose folder has not been removed yet."""
    pending = data.get("deleting")
    if not isinstance(pending, list):
        return []
    records = []
    for item in pending:
        if isinstance(item, str):  # written by an earlier version: the set-aside folder only
            records.append({"trash": item})
        elif isinstance(item, dict) and isinstance(item.get("trash"), str):
            records.append(item)
    return records


def _drop_pending(trash: Path) -> None:
    """Forget the record of a deletion."""
    with _locked():
        data = _read()
        if _set_pending(data, [r for r in _pending(data) if r["trash"] != str(trash)]):
            _write(data)


def _set_pending(data: dict[str, Any], records: list[dict[str, Any]]) -> bool:
    """Store the records in `data`; whether that changed anything."""
    if records == _pending(data) and (records or "deleting" not in data):
        return False
    if records:
        data["deleting"] = records
    else:
        data.pop("deleting", None)
    return True


def _restore(record: dict[str, Any]) -> None:
    """Put a project whose folder was never renamed aside back on the list; drop the record."""
    with _locked():
        data = _read()
        spec_path = Path(record["root"]) / SPEC_FILE_NAME
        if _norm(spec_path) not in {_norm(e["spec_path"]) for e in data["projects"]}:
            entry = record.get("entry")
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and _norm(entry.get("spec_path") or "") == _norm(spec_path)
                and entry["id"] not in {e["id"] for e in data["projects"]}
            ):
                index = record.get("index")
                index = index if isinstance(index, int) else len(data["projects"])
                data["projects"].insert(min(max(index, 0), len(data["projects"])), entry)
            else:  # no usable entry: registered afresh (a new id)
                register(spec_path, created_folder=True)
                data = _read()
        _set_pending(data, [r for r in _pending(data) if r["trash"] != record["trash"]])
        _write(data)


def _empty_set_aside(trash: Path, root: Path) -> dict[str, list[str]]:
    """Remove a project's entries from its set-aside folder; the folder goes too when nothing
    else is left in it, or else gets its name back (a free name beside it if that was taken)."""
    deleted: list[str] = []
    kept: list[str] = []
    for name in PROJECT_ENTRIES:
        target = trash / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            continue
        deleted.append(str(root / name))
    for leftover in list(trash.iterdir()):
        if leftover.name.startswith(".") and leftover.name.endswith(".tmp"):
            leftover.unlink(missing_ok=True)  # temp files of interrupted writes
        else:
            kept.append(leftover.name)
    if not kept:
        trash.rmdir()
        deleted.append(str(root))
        return {"deleted": deleted, "kept": kept}
    target, n = root, 1
    while target.exists():  # a new project took the name meanwhile
        n += 1
        target = root.with_name(f"{root.name}-{n}")
    os.rename(trash, target)
    return {"deleted": deleted, "kept": kept}


def create_project(*args: Any, **kwargs: Any) -> tuple[Project, dict[str, Any]]:
    """Create a project (`Project.create`'s arguments) and register it: (project, its entry).
    A failed registration removes the new project's files again."""
    entries: list[dict[str, Any]] = []

    def on_created(spec_file: Path, name: str, created_folder: bool) -> None:
        entries.append(register(spec_file, name=name, created_folder=created_folder))

    project = Project.create(*args, on_created=on_created, **kwargs)
    return project, entries[0]


def ensure_sample_project() -> dict[str, Any] | None:
    """Create and register the bundled sample project when no project is registered yet.

    Returns the new entry, or None when projects exist already.
    """
    with _locked():
        if _read()["projects"]:
            return None
        config = dict(sample.SAMPLE_CONFIG)
        _, entry = create_project(
            config.get("name") or "Sample specimens",
            sample.sample_csv_path(),
            config["primary_key"],
            config["img_path"],
            config.get("image_root") or sample.sample_image_root(),
            config.get("group_by") or [],
            sam2=config.get("sam2"),
            mask_mode=config.get("mask_mode") or "original",
            device=config.get("device") or "auto",
            image_size=config.get("image_size"),
            labels=sample.sample_labels(),
            # The shipped hand-made masks: the sample shows its mIoU after a run.
            ground_truth=sample.sample_gt_mask_dir(),
        )
        return entry
