"""A project: its spec, CSV rows as frames, groups, mask paths; creation after validation
(the checks themselves are in `validation.py`)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sst_desktop import paths
from sst_desktop.data import mask_files, mask_state, table
from sst_desktop.data.mask_files import (  # noqa: F401  (re-exported: callers import them from here)
    MASK_SUFFIX,
    mask_file_name,
    pk_from_mask_file_name,
)
from sst_desktop.data.spec import (
    DEFAULT_IMAGE_SIZE,
    SPEC_FILE_NAME,
    Spec,
    check_spec_values,
    default_variant,
    load_spec,
    save_spec,
)
from sst_desktop.data.validation import (
    column_list,
    filter_rows,
    images_root,
    validate_config,
)
from sst_desktop.errors import UserError
from sst_desktop.fileio import atomic_write_bytes


class UnknownKeyError(UserError, KeyError):
    """A primary key or group key that the project does not have."""

    __str__ = Exception.__str__  # KeyError would wrap the message in quotes


# ---------------------------------------------------------------------------------------------
# Frames, groups, sampling


@dataclass(frozen=True)
class Frame:
    """One image of the project: a CSV row."""

    pk: str
    row: int  # 0-based data row in the CSV; table.csv_row(row) is the spreadsheet row number
    image_path: Path  # absolute
    group_key: str


@dataclass(frozen=True)
class Group:
    """Frames sharing the same group-by values, in CSV row order."""

    key: str  # stable, URL- and file-name-safe
    label: str  # e.g. "Dataset=none, View=dorsal"
    values: dict[str, str]
    frames: list[Frame] = field(repr=False)


def sample_references(frames: Sequence[Any], n: int, seed: int | str | None) -> list[Any]:
    """`n` frames picked as the original SST-GUI did: Random(seed).sample over CSV order."""
    if n < 0:
        raise UserError(f"Number of references to sample is {n}: use 0 or more.")
    return random.Random(seed).sample(list(frames), k=min(n, len(frames)))


# ---------------------------------------------------------------------------------------------
# Project


class Project:
    """An open project. CSV, frames and groups are built once, on first use."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._frames: list[Frame] | None = None
        self._by_pk: dict[str, Frame] = {}
        self._groups: list[Group] = []
        self._by_group: dict[str, Group] = {}
        self._columns: list[str] = []
        self._df = None
        # Server threads share one Project: the CSV is read once, and readers never see half of it.
        self._load_lock = threading.Lock()

    # -- opening and creating

    @classmethod
    def open(cls, spec_path: str | os.PathLike) -> Project:
        """Open the project of a spec.json (v1 or original SST-GUI); SpecError if it is invalid."""
        return cls(load_spec(spec_path))

    @classmethod
    def create(
        cls,
        name: str,
        csv_path: str | os.PathLike,
        primary_key: str,
        img_path: str,
        image_root: str | os.PathLike | None,
        group_by: Sequence[str] | None,
        *,
        sam2: str | None = None,
        mask_mode: str = "original",
        device: str = "auto",
        image_size: int | None = None,
        checkpoint: str | os.PathLike | None = None,
        folder: str | os.PathLike | None = None,
        labels: dict[int, str] | None = None,
        ground_truth: str | os.PathLike | None = None,
        delimiter: str | None = None,
        on_created: Callable[[Path, str, bool], Any] | None = None,
    ) -> Project:
        """Validate, then make the project folder (CSV copy, spec.json, mask folders).

        `delimiter` None detects the CSV's separator; the copy is written comma-separated.
        `on_created(spec_file, name, created_folder)` runs last (the registry registers the
        project there); if it raises, everything this call made is removed again.
        """

        csv_path = Path(os.path.expanduser(str(csv_path))).absolute()
        name = (name or "").strip() or csv_path.stem
        report = validate_config(
            csv_path,
            primary_key,
            img_path,
            image_root,
            group_by,
            check_images=False,
            delimiter=delimiter,
        )
        report.raise_for_errors()
        spec = Spec(
            root=Path("."),  # set below
            csv=Path("."),
            primary_key=primary_key,
            img_path=img_path,
            image_root=images_root(image_root, csv_path),
            group_by=column_list(group_by),
            sam2=sam2 or default_variant(),
            checkpoint=Path(os.path.expanduser(str(checkpoint))).absolute() if checkpoint else None,
            device=device or "auto",
            image_size=DEFAULT_IMAGE_SIZE if image_size is None else image_size,
            mask_mode=mask_mode or "original",
            name=name,
            labels=dict(labels or {}),
            ground_truth=Path(os.path.expanduser(str(ground_truth))).absolute()
            if ground_truth
            else None,
        )
        check_spec_values(spec, source=f"Project {name!r}")

        made: list[Path] = []
        if folder is None or not str(folder).strip():
            root = _make_free_folder(paths.projects_dir(), table.slugify(name) or "project")
            made.append(root)
            created_folder = True
        else:
            root = Path(os.path.expanduser(str(folder))).absolute()
            _check_target_folder(root)
            created_folder = not root.exists() or not any(root.iterdir())
        spec_file = root / SPEC_FILE_NAME
        try:
            if not root.exists():
                try:
                    root.mkdir(parents=True)
                    made.append(root)
                except FileExistsError:
                    pass  # made by a concurrent call; the spec.json reservation below decides
            _reserve(spec_file)
            made.append(spec_file)
            master = root / "master.csv"
            # The copy is comma-separated, as the original SST-GUI reads it.
            atomic_write_bytes(
                master, table.comma_separated(csv_path.read_bytes(), report.delimiter)
            )
            made.append(master)
            for sub in ("ref_masks", "pred_masks"):
                if not (root / sub).exists():
                    (root / sub).mkdir()
                    made.append(root / sub)
            spec.root, spec.csv = root, master
            save_spec(spec, spec_file)
            if on_created is not None:
                on_created(spec_file, name, created_folder)
        except BaseException:
            # Undo only what this call made, newest first; never touch anything that was there.
            for path in reversed(made):
                if path == root:
                    # Only when empty: a concurrent call may have put its project in it.
                    with contextlib.suppress(OSError):
                        path.rmdir()
                elif path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            raise
        return cls(spec)

    # -- identity

    @property
    def root(self) -> Path:
        """The project folder."""
        return self.spec.root

    @property
    def name(self) -> str:
        """The project's display name."""
        return self.spec.display_name

    @property
    def spec_path(self) -> Path | None:
        """The spec.json this project was opened from."""
        return self.spec.spec_path

    def save(self) -> None:
        """Write spec.json back (atomically)."""
        save_spec(self.spec, self.spec_path or self.root / SPEC_FILE_NAME)

    # -- rows, frames, groups

    def _load(self) -> None:
        if self._frames is not None:
            return
        with self._load_lock:
            if self._frames is None:
                self._load_locked()

    def _load_locked(self) -> None:
        spec = self.spec
        df = table.read_csv(spec.csv)
        columns = list(df.columns)
        source = spec.csv
        if spec.filter_query is not None:
            df = filter_rows(df, spec.filter_query)
        table.check_primary_key(df, spec.primary_key, source=source)
        table.check_columns(columns, spec.group_by, what="Group-by", source=source)
        template = table.parse_image_path(spec.img_path, columns, source=source)
        root = spec.images_root
        pks = df[spec.primary_key].tolist()
        texts = template.render_columns(df)
        frames: list[Frame | None] = [None] * len(df)
        groups: list[Group] = []
        for rg in table.group_rows(df, spec.group_by):
            members = []
            for index in rg.indices:
                frame = Frame(
                    pk=pks[index],
                    row=index,
                    image_path=table.resolve_image_path(texts[index], root),
                    group_key=rg.key,
                )
                frames[index] = frame
                members.append(frame)
            groups.append(Group(key=rg.key, label=rg.label, values=rg.values, frames=members))
        self._df = df
        self._columns = columns
        self._groups = groups
        self._by_group = {g.key: g for g in groups}
        all_frames = [f for f in frames if f is not None]
        self._by_pk = {f.pk: f for f in all_frames}
        self._frames = all_frames  # set last: it marks the load as complete

    def reload(self) -> None:
        """Forget the loaded CSV so the next call reads it again."""
        with self._load_lock:
            self._frames = None

    @property
    def columns(self) -> list[str]:
        """The CSV's column names."""
        self._load()
        return list(self._columns)

    def frames(self) -> list[Frame]:
        """All frames in CSV order."""
        self._load()
        return list(self._frames or [])

    def groups(self) -> list[Group]:
        """Groups in order of first appearance in the CSV."""
        self._load()
        return list(self._groups)

    def group(self, key: str | Group) -> Group:
        """The group with this key (or label); UnknownKeyError if none."""
        if isinstance(key, Group):
            return key
        self._load()
        found = self._by_group.get(key)
        if found is None:
            same = [g for g in self._groups if g.label == key]
            if len(same) > 1:
                raise UnknownKeyError(
                    f"Project {self.name!r}: group label {key!r} names {len(same)} groups "
                    f"({', '.join(g.key for g in same)}): use the group key."
                )
            found = same[0] if same else None
        if found is None:
            raise UnknownKeyError(
                f"Project {self.name!r} has no group {key!r}: use one of "
                f"{', '.join(repr(g.label) for g in self._groups[:10])}"
                f"{'...' if len(self._groups) > 10 else ''}."
            )
        return found

    def frame(self, pk: str) -> Frame:
        """The frame with this primary key; UnknownKeyError if none."""
        self._load()
        found = self._by_pk.get(str(pk))
        if found is None:
            raise UnknownKeyError(
                f"Project {self.name!r} has no image with primary key {pk!r} (column "
                f"{self.spec.primary_key!r} of {self.spec.csv})."
            )
        return found

    def row_values(self, pk: str) -> dict[str, str]:
        """All CSV values of a frame's row."""
        frame = self.frame(pk)
        assert self._df is not None
        return {c: str(v) for c, v in self._df.iloc[frame.row].items()}

    # -- masks

    def ref_mask_path(self, pk: str) -> Path:
        """`root/ref_masks/{pk}.png` (see `mask_file_name` for unsafe characters)."""
        return self.spec.ref_masks_dir / mask_file_name(pk)

    def pred_mask_path(self, pk: str) -> Path:
        """`root/pred_masks/{pk}.png` (see `mask_file_name` for unsafe characters)."""
        return self.spec.pred_masks_dir / mask_file_name(pk)

    def mask_dir(self, kind: str) -> Path:
        """`ref_masks/` (kind "ref") or `pred_masks/` ("pred") of this project."""
        return {"ref": self.spec.ref_masks_dir, "pred": self.spec.pred_masks_dir}[kind]

    def mask_names(self, kind: str) -> set[str]:
        """File names in `ref_masks/` (kind "ref") or `pred_masks/` ("pred"): one listing."""
        return mask_files.mask_names(self.mask_dir(kind))

    def _with_mask(self, frames: Sequence[Frame], folder: Path) -> list[Frame]:
        names = mask_files.mask_names(folder)
        return [f for f in frames if mask_file_name(f.pk) in names]

    def reference_frames(self, group: str | Group) -> list[Frame]:
        """Frames of the group that have a saved reference mask, in CSV order."""
        return self._with_mask(self.group(group).frames, self.spec.ref_masks_dir)

    def all_reference_frames(self) -> list[Frame]:
        """Frames of every group that have a saved reference mask, group by group in CSV order."""
        return self._with_mask(
            [f for g in self.groups() for f in g.frames], self.spec.ref_masks_dir
        )

    def predicted_frames(self, group: str | Group) -> list[Frame]:
        """Frames of the group that have a prediction mask, in CSV order."""
        return self._with_mask(self.group(group).frames, self.spec.pred_masks_dir)

    def sample_references(self, group: str | Group, n: int, seed: int | str | None) -> list[Frame]:
        """`n` frames of the group picked as the original SST-GUI did (see `sample_references`)."""
        return sample_references(self.group(group).frames, n, seed)

    def status(self, group: str | Group | None = None) -> dict[str, int]:
        """Counts for one group, or the whole project: images, refs, preds (a frame with a
        reference is not a prediction) and stale predictions (see `mask_state`)."""
        groups = None if group is None else [self.group(group)]
        return mask_state.project_counts(self, groups)


def _make_free_folder(parent: Path, slug: str) -> Path:
    """Create and return parent/slug, or parent/slug-2, -3... the first that did not exist.

    mkdir itself is the test, so two calls at once (threads or processes) never get one folder.
    """
    parent.mkdir(parents=True, exist_ok=True)
    candidate, n = parent / slug, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = parent / f"{slug}-{n}"


def _reserve(spec_file: Path) -> None:
    """Create an empty `spec_file`, failing if it exists: one new project per folder, even when
    two are created in the same chosen folder at once (save_spec replaces it atomically)."""
    try:
        with open(spec_file, "x", encoding="utf-8"):
            pass
    except FileExistsError:
        raise UserError(
            f"Project folder {spec_file.parent} already has {spec_file.name}: open that project "
            "instead, or choose an empty folder."
        ) from None


def _check_target_folder(root: Path) -> None:
    """UserError if a user-chosen folder cannot hold a new project without overwriting files."""
    if root.exists() and not root.is_dir():
        raise UserError(f"Project folder {root} is a file, not a folder: choose a folder.")
    for name in (SPEC_FILE_NAME, "master.csv"):
        if (root / name).exists():
            raise UserError(
                f"Project folder {root} already has {name}: open that project instead, or choose "
                f"an empty folder."
            )
