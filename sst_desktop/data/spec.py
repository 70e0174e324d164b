"""spec.json: a project's configuration (schema version 1), and the original SST-GUI's specs."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sst_desktop import fileio
from sst_desktop.data import candidate_settings, table
from sst_desktop.data.labels import labels_to_json, parse_labels
from sst_desktop.data.masks import MASK_MODES
from sst_desktop.data.table import looks_like_sql
from sst_desktop.engine.models import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VARIANT,
    DEVICES,
    IMAGE_SIZE_MAX,
    IMAGE_SIZE_MIN,
    IMAGE_SIZE_STEP,
    resolve_variant,
)
from sst_desktop.errors import SpecError, UserError
from sst_desktop.fileio import atomic_write_json

SPEC_VERSION = 1
SPEC_FILE_NAME = "spec.json"
# Which references condition a group's images: its own (the SST paper) or every reference of the
# project (the original SST-GUI since January 2026).
REFERENCE_SCOPES = ("group", "all")
# The original SST-GUI's only filter that needs no SQL engine: the whole table.
LEGACY_FILTER = "SELECT * FROM master_df"
LEGACY_CSV_NAME = "master.csv"

# Every key a v1 spec may hold, with the JSON type it must have.
_KEYS: dict[str, str] = {
    "version": "integer",
    "name": "string",
    "root": "string",
    "csv": "string",
    "primary_key": "string",
    "img_path": "string",
    "image_root": "string",
    "group_by": "list of strings",
    "sam2": "string",
    "checkpoint": "string",
    "device": "string",
    "image_size": "integer",
    "mask_mode": "string",
    "filter_query": "string",
    "labels": "object",
    "ground_truth": "string",
    "reference_scope": "string",
    "candidates": "object",
}
_REQUIRED = ("primary_key", "img_path")
_LEGACY_KEYS = {"root", "filter_query", "group_by", "img_path", "primary_key", "sam2", "device"}
_LEGACY_KEYS |= {"mask_mode"}
_NULLABLE = {
    "image_root",
    "checkpoint",
    "name",
    "filter_query",
    "labels",
    "ground_truth",
    "candidates",
}


def default_variant() -> str:
    """The SAM2 variant of a spec that names none."""
    return DEFAULT_VARIANT


@dataclass
class Spec:
    """A project's configuration; all paths absolute once loaded."""

    root: Path  # the project folder: ref_masks/, pred_masks/ and runs/ live here
    csv: Path
    primary_key: str
    img_path: str  # a column name, a "{column}" template or an SQL string expression
    image_root: Path | None = None  # relative image paths resolve here; None = the CSV's folder
    group_by: list[str] = field(default_factory=list)
    sam2: str = field(default_factory=default_variant)
    checkpoint: Path | None = None
    device: str = "auto"
    image_size: int = DEFAULT_IMAGE_SIZE
    mask_mode: str = "original"
    name: str | None = None
    filter_query: str | None = None  # "SELECT * FROM master_df WHERE ...", kept as written
    labels: dict[int, str] = field(default_factory=dict)  # part names by object ID
    ground_truth: Path | None = None  # folder of ground-truth ID masks {pk}.png
    reference_scope: str = "group"  # one of REFERENCE_SCOPES
    # Candidate-mask settings: a preset and the settings changed from it (candidate_settings).
    candidates: dict[str, Any] | None = None
    version: int = SPEC_VERSION
    spec_path: Path | None = None  # where it was loaded from or saved to (not stored)
    legacy: bool = False  # read from an original SST-GUI spec (not stored)

    @property
    def display_name(self) -> str:
        """The project's name, or its folder's name when the spec has none."""
        return self.name or self.root.name

    @property
    def images_root(self) -> Path:
        """Folder that relative image paths resolve against."""
        return self.image_root if self.image_root is not None else self.csv.parent

    @property
    def ref_masks_dir(self) -> Path:
        """Folder of the labelled reference masks."""
        return self.root / "ref_masks"

    @property
    def pred_masks_dir(self) -> Path:
        """Folder of the propagated masks."""
        return self.root / "pred_masks"

    def to_dict(self, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
        """JSON-able v1 dict; paths inside `relative_to` (the spec's folder) are stored relative."""
        base = Path(relative_to) if relative_to is not None else None

        def rel(path: Path | None) -> str | None:
            if path is None:
                return None
            if base is not None:
                try:
                    return (
                        Path(os.path.relpath(path, base)).as_posix()
                        if _inside(path, base)
                        else str(path)
                    )
                except ValueError:  # another drive on Windows
                    return str(path)
            return str(path)

        out: dict[str, Any] = {"version": SPEC_VERSION}
        if self.name:
            out["name"] = self.name
        out |= {
            "root": rel(self.root),
            "csv": rel(self.csv),
            "primary_key": self.primary_key,
            "img_path": self.img_path,
            "image_root": rel(self.image_root),
            "group_by": list(self.group_by),
            "sam2": self.sam2,
            "checkpoint": rel(self.checkpoint),
            "device": self.device,
            "image_size": self.image_size,
            "mask_mode": self.mask_mode,
            "reference_scope": self.reference_scope,
        }
        if self.filter_query is not None:
            # The original SST-GUI reads this spec too: it requires filter_query and resolves
            # root against its working folder, so root stays absolute.
            out["filter_query"] = self.filter_query
            out["root"] = str(self.root)
        if self.labels:
            out["labels"] = labels_to_json(self.labels)
        if self.ground_truth is not None:
            out["ground_truth"] = rel(self.ground_truth)
        if self.candidates:
            out["candidates"] = dict(self.candidates)
        return out


def _inside(path: Path, base: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(base))
    except ValueError:
        return False
    return True


def save_spec(spec: Spec, path: str | os.PathLike) -> None:
    """Write `spec` to `path` atomically as v1, paths relative to its folder where inside it."""
    path = Path(path).absolute()
    atomic_write_json(path, spec.to_dict(relative_to=path.parent))
    spec.spec_path = path
    spec.legacy = False


def load_spec(path: str | os.PathLike, *, check_csv: bool = True) -> Spec:
    """Read and validate a spec.json (v1 or an original SST-GUI spec); SpecError on any problem."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        path = path / SPEC_FILE_NAME
    special = fileio.special_file_kind(path)
    if special:
        raise SpecError(f"Spec file {path} is {special}, not a file: check the path.")
    if not path.is_file():
        raise SpecError(f"Spec file {path} does not exist: check the path.")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise SpecError(f"Spec file {path} is not UTF-8 text: save it as UTF-8 JSON.") from None
    except OSError as exc:  # permissions, a file locked by another program...
        raise SpecError(
            f"Spec file {path} cannot be read ({exc.strerror or exc}): check its permissions."
        ) from None
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"Spec file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}): fix the JSON syntax."
        ) from None
    except RecursionError:
        raise SpecError(
            f"Spec file {path} nests lists or objects too deeply to read: a spec is one object "
            "of plain values (see the README's spec.json table)."
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            f"Spec file {path} must hold a JSON object ({{...}}), not {_a(_json_type(data))}."
        )
    spec = _from_legacy(data, path) if is_legacy_spec(data) else spec_from_dict(data, path)
    if check_csv and not spec.root.is_dir():
        # A typo here would put masks and runs under a new, wrong folder and find no references.
        what = "is a file, not a folder" if spec.root.exists() else "does not exist"
        raise SpecError(
            f"Spec file {path}: key 'root': project folder {spec.root} {what}; fix the path "
            f"(relative paths resolve against {path.parent})."
        )
    if check_csv and not spec.csv.is_file():
        key = "root" if spec.legacy else "csv"
        raise SpecError(
            f"Spec file {path}: key {key!r}: CSV file {spec.csv} does not exist; fix the path "
            f"(relative paths resolve against {path.parent})."
        )
    return spec


def is_legacy_spec(data: dict[str, Any]) -> bool:
    """True for a spec written by the original SST-GUI: no version, and filter_query or root
    without csv (it always wrote root; a spec with neither is a v1 spec using the defaults)."""
    if "version" in data:
        return False
    return "filter_query" in data or ("root" in data and "csv" not in data)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _a(noun: str) -> str:
    """Noun with its indefinite article ("an integer", "a list")."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _check_type(path: Path, key: str, value: Any) -> None:
    expected = _KEYS[key]
    if value is None and key in _NULLABLE:
        return
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "list of strings": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "object": isinstance(value, dict),
    }[expected]
    if not ok:
        hint = ""
        if key == "group_by" and isinstance(value, str):
            hint = f' such as ["{value}"]'
        raise SpecError(
            f"Spec file {path}: key {key!r} must be {_a(expected)}{hint}, not {_a(_json_type(value))} "
            f"({json.dumps(value)[:60]})."
        )


def _check_unknown(path: Path, data: dict[str, Any], known: set[str]) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            fix = (
                f"did you mean {close[0]!r}?"
                if close
                else f"known keys: {', '.join(sorted(known))}."
            )
            raise SpecError(f"Spec file {path}: unknown key {key!r}: {fix}")


def _resolve(base: Path, text: str) -> Path:
    """`text` as a path, relative to `base` unless absolute; `~` expanded."""
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


def spec_from_dict(data: dict[str, Any], path: str | os.PathLike) -> Spec:
    """Validate a v1 spec dict read from `path`; relative paths resolve against its folder."""
    path = Path(path)
    base = path.parent
    _check_unknown(path, data, set(_KEYS))
    for key, value in data.items():
        _check_type(path, key, value)
    version = data.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise SpecError(
            f"Spec file {path}: key 'version' is {version}, but this SST Desktop reads version "
            f'{SPEC_VERSION}: set "version": {SPEC_VERSION} or update SST Desktop.'
        )
    for key in _REQUIRED:
        if not str(data.get(key) or "").strip():
            raise SpecError(f"Spec file {path}: key {key!r} is missing or empty: add it.")
    root = _resolve(base, data.get("root") or ".")
    csv = _resolve(base, data["csv"]) if data.get("csv") else root / LEGACY_CSV_NAME
    spec = Spec(
        root=root,
        csv=csv,
        primary_key=data["primary_key"],
        img_path=data["img_path"],
        image_root=_resolve(base, data["image_root"]) if data.get("image_root") else None,
        group_by=list(data.get("group_by") or []),
        sam2=data.get("sam2") or default_variant(),
        checkpoint=_resolve(base, data["checkpoint"]) if data.get("checkpoint") else None,
        device=data.get("device") or "auto",
        image_size=data.get("image_size", DEFAULT_IMAGE_SIZE),
        mask_mode=data.get("mask_mode") or "original",
        name=data.get("name") or None,
        filter_query=data.get("filter_query"),
        labels=parse_labels(data.get("labels"), source=f"Spec file {path}"),
        ground_truth=_resolve(base, data["ground_truth"]) if data.get("ground_truth") else None,
        reference_scope=data.get("reference_scope") or "group",
        candidates=data.get("candidates") or None,
        spec_path=path,
    )
    check_spec_values(spec, source=f"Spec file {path}")
    _check_expressions(spec, source=f"Spec file {path}")
    return spec


def check_spec_values(spec: Spec, *, source: str) -> None:
    """SpecError for a bad device, mask mode, image size, group-by list or model name."""
    check_device(spec.device, source=source)
    check_mask_mode(spec.mask_mode, source=source)
    check_reference_scope(spec.reference_scope, source=source)
    check_image_size(spec.image_size, source=source)
    if len(set(spec.group_by)) != len(spec.group_by):
        raise SpecError(f"{source}: key 'group_by' lists a column twice: list each column once.")
    if any(not c.strip() for c in spec.group_by):
        raise SpecError(f"{source}: key 'group_by' holds an empty column name: remove it.")
    check_variant(spec.sam2, source=source)
    parse_labels({str(k): v for k, v in spec.labels.items()}, source=source)
    if spec.candidates:
        try:
            candidate_settings.resolve(spec.candidates, has_gpu=False)
        except UserError as exc:
            raise SpecError(f"{source}: key 'candidates': {exc}") from None


def check_reference_scope(scope: Any, *, source: str) -> None:
    """SpecError unless `scope` is one of REFERENCE_SCOPES."""
    if scope not in REFERENCE_SCOPES:
        raise SpecError(
            f"{source}: key 'reference_scope' is {scope!r}: use 'group' (each group uses its own "
            f"references) or 'all' (every reference of the project, as SST-GUI does)."
        )


def check_device(device: Any, *, source: str) -> None:
    """SpecError unless `device` is one of DEVICES."""
    if device not in DEVICES:
        raise SpecError(f"{source}: key 'device' is {device!r}: use one of {', '.join(DEVICES)}.")


def check_mask_mode(mode: Any, *, source: str) -> None:
    """SpecError unless `mode` is one of MASK_MODES (with a did-you-mean hint)."""
    if mode not in MASK_MODES:
        close = difflib.get_close_matches(str(mode), MASK_MODES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(
            f"{source}: key 'mask_mode' is {mode!r}{hint}: use one of {', '.join(MASK_MODES)}."
        )


def check_image_size(size: Any, *, source: str) -> None:
    """SpecError unless `size` is a whole multiple of IMAGE_SIZE_STEP within the bounds."""
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not IMAGE_SIZE_MIN <= size <= IMAGE_SIZE_MAX
        or size % IMAGE_SIZE_STEP
    ):
        raise SpecError(
            f"{source}: key 'image_size' is {size!r}: use a multiple of {IMAGE_SIZE_STEP} from "
            f"{IMAGE_SIZE_MIN} to {IMAGE_SIZE_MAX} (default {DEFAULT_IMAGE_SIZE})."
        )


def check_variant(name: str, *, source: str) -> None:
    """SpecError unless `name` is a known SAM2 variant name or HF id."""
    try:
        resolve_variant(name)
    except UserError as exc:
        raise SpecError(f"{source}: key 'sam2': {exc}") from None


# ---------------------------------------------------------------------------------------------
# Original SST-GUI specs


def is_whole_table_filter(query: str) -> bool:
    """True for `SELECT * FROM master_df` (any case, spacing, trailing semicolon): no filtering."""
    normalized = " ".join(query.strip().rstrip(";").split()).lower()
    return normalized == LEGACY_FILTER.lower()


def _from_legacy(data: dict[str, Any], path: Path) -> Spec:
    """Map an original SST-GUI spec to a v1 Spec (CSV = root/master.csv)."""
    source = f"Spec file {path} (original SST-GUI format)"
    _check_unknown(path, data, _LEGACY_KEYS | set(_KEYS) - {"version", "csv"})
    query = data.get("filter_query", LEGACY_FILTER)
    if not isinstance(query, str):
        raise SpecError(
            f"{source}: key 'filter_query' must be a string such as "
            f'"{LEGACY_FILTER}", not {_a(_json_type(query))}.'
        )
    for key, value in data.items():
        if key in _KEYS:
            _check_type(path, key, value)
    for key in ("root", *_REQUIRED):
        if not str(data.get(key) or "").strip():
            raise SpecError(f"{source}: key {key!r} is missing or empty: add it.")
    root = _resolve(path.parent, data["root"])
    csv = root / LEGACY_CSV_NAME
    img_path = data["img_path"]
    _check_legacy_img_path(img_path, csv, source)
    spec = Spec(
        root=root,
        csv=csv,
        primary_key=data["primary_key"],
        img_path=img_path,
        image_root=_resolve(path.parent, data["image_root"]) if data.get("image_root") else None,
        group_by=list(data.get("group_by") or []),
        sam2=data.get("sam2") or default_variant(),
        checkpoint=_resolve(path.parent, data["checkpoint"]) if data.get("checkpoint") else None,
        device=data.get("device") or "auto",
        image_size=data.get("image_size", DEFAULT_IMAGE_SIZE),
        mask_mode=data.get("mask_mode") or "original",
        name=data.get("name") or None,
        filter_query=query,
        labels=parse_labels(data.get("labels"), source=source),
        ground_truth=(
            _resolve(path.parent, data["ground_truth"]) if data.get("ground_truth") else None
        ),
        reference_scope=data.get("reference_scope") or "group",
        spec_path=path,
        legacy=True,
    )
    check_spec_values(spec, source=source)
    _check_expressions(spec, source=source)
    return spec


def _check_expressions(spec: Spec, *, source: str) -> None:
    """SpecError for a filter_query or SQL img_path outside the evaluated whitelist."""
    sql_path = looks_like_sql(spec.img_path)
    if not sql_path and (spec.filter_query is None or is_whole_table_filter(spec.filter_query)):
        return
    # sqlglot is imported only when a spec holds SQL: the window's start-up reads specs.
    from sst_desktop.data import sqlexpr

    try:
        if spec.filter_query is not None and not is_whole_table_filter(spec.filter_query):
            sqlexpr.parse_filter(spec.filter_query)
        if sql_path:
            sqlexpr.parse_expression(spec.img_path)
    except UserError as exc:
        raise SpecError(f"{source}: {exc}") from None


def _check_legacy_img_path(img_path: str, csv: Path, source: str) -> None:
    """SpecError when the original spec's img_path is neither a column, a template nor an SQL
    string expression the whitelist evaluates (columns are checked when the CSV is there)."""
    if not csv.is_file():
        return  # the missing CSV is reported on its own; the expression is checked later
    try:
        table.parse_image_path(img_path, list(table.read_csv(csv).columns), source=csv)
    except UserError as exc:
        raise SpecError(f"{source}: key 'img_path': {exc}") from None
