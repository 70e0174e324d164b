"""A project configuration checked before anything is created: CSV, keys, groups, image paths
and a sample of image headers, with every problem in one report."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sst_desktop.data import images, mask_files, table
from sst_desktop.data.mask_files import mask_file_name
from sst_desktop.data.spec import is_whole_table_filter
from sst_desktop.errors import ImageError, UserError

# Images whose headers the deeper validation opens at most (spread over the whole CSV).
DEFAULT_IMAGE_CHECK_LIMIT = 200
# How many groups a validation report lists (all are counted).
REPORT_GROUP_LIMIT = 200
# Default file systems of these platforms treat "A.png" and "a.png" as one file.
_CASE_INSENSITIVE_FILE_NAMES = sys.platform in ("win32", "darwin")


def _name_too_long(pk: str) -> bool:
    """Whether `pk`'s mask file name is over the limit (the one rule, from `mask_file_name`)."""
    try:
        mask_file_name(pk)
    except UserError:
        return True
    return False


def column_list(group_by: Sequence[str] | str | None) -> list[str]:
    """Group-by columns as a list; a single string is one column, not its characters."""
    if group_by is None:
        return []
    if isinstance(group_by, str):
        return [group_by] if group_by.strip() else []
    return [str(c) for c in group_by]


@dataclass
class ValidationReport:
    """What a configuration would give, computed before a project is created."""

    csv: str
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    delimiter: str = ","  # the CSV's field separator, detected or as given
    groups: int = 0
    group_sizes: list[dict[str, Any]] = field(default_factory=list)  # {key, label, size}
    images_found: int = 0
    images_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)
    path_examples: list[str] = field(default_factory=list)  # resolved paths of the first rows
    duplicate_key_count: int = 0
    duplicate_keys: list[dict[str, Any]] = field(default_factory=list)  # {key, rows}
    blank_keys: int = 0
    blank_key_rows: list[int] = field(default_factory=list)
    images_checked: int = 0  # headers opened by the deeper check
    unreadable_count: int = 0  # among the checked ones
    unreadable: list[dict[str, str]] = field(default_factory=list)  # {pk, path, error}
    errors: list[str] = field(default_factory=list)  # block project creation
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when a project can be created from this configuration."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (with `ok`) for the GUI."""
        return asdict(self) | {"ok": self.ok}

    def summary_lines(self) -> list[str]:
        """Short human-readable lines for the CLI and logs."""
        lines = [f"CSV {self.csv}: {self.rows} rows, {len(self.columns)} columns"]
        if self.groups:
            sizes = [g["size"] for g in self.group_sizes]
            lines.append(
                f"{self.groups} group(s), {min(sizes)}-{max(sizes)} images each"
                if sizes
                else f"{self.groups} group(s)"
            )
        if self.images_found or self.images_missing:
            lines.append(f"images found: {self.images_found}, missing: {self.images_missing}")
            lines += [f"  missing: {p}" for p in self.missing_examples]
        if self.images_checked:
            lines.append(
                f"image headers checked: {self.images_checked}, unreadable: {self.unreadable_count}"
            )
            lines += [f"  unreadable: {u['path']}: {u['error']}" for u in self.unreadable]
        if self.duplicate_key_count:
            lines.append(f"duplicate keys: {self.duplicate_key_count}")
        if self.blank_keys:
            lines.append(f"blank keys: {self.blank_keys}")
        lines += [f"error: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        return lines

    def raise_for_errors(self) -> None:
        """UserError with the first error, if any."""
        if self.errors:
            raise UserError(self.errors[0])


def images_root(image_root: str | os.PathLike | None, csv_path: Path) -> Path:
    """The folder image paths are relative to: `image_root`, or the CSV's folder when empty."""
    if image_root is None or not str(image_root).strip():
        return csv_path.absolute().parent
    return Path(os.path.expanduser(str(image_root))).absolute()


def validate_config(
    csv_path: str | os.PathLike,
    primary_key: str,
    img_path: str,
    image_root: str | os.PathLike | None,
    group_by: Sequence[str] | None,
    check_images: bool = True,
    image_check_limit: int = DEFAULT_IMAGE_CHECK_LIMIT,
    filter_query: str | None = None,
    delimiter: str | None = None,
) -> ValidationReport:
    """Check a configuration without creating anything; problems go into the report, not raised.

    `image_root` empty = the CSV's folder. With `check_images`, up to `image_check_limit` found
    images (spread evenly over the CSV) have their header opened to catch unreadable files.
    """
    csv_path = Path(os.path.expanduser(str(csv_path)))
    report = ValidationReport(csv=str(csv_path))
    group_by = column_list(group_by)
    try:
        df = table.read_csv(csv_path, delimiter=delimiter)
    except UserError as exc:
        report.errors.append(str(exc))
        return report
    report.columns = list(df.columns)
    report.delimiter = df.attrs.get("delimiter", ",")
    if filter_query is not None:
        try:
            df = filter_rows(df, filter_query)
        except UserError as exc:
            report.errors.append(str(exc))
            return report
    report.rows = len(df)
    if not len(df):
        report.errors.append(
            f"CSV file {csv_path} has a header but no data rows: add one row per image."
        )
        return report

    key_ok = False
    try:
        table.check_columns(report.columns, [primary_key], what="Primary key", source=csv_path)
        key_ok = True
    except UserError as exc:
        report.errors.append(str(exc) if primary_key else "No primary key column chosen: pick one.")
    if key_ok:
        blanks = table.blank_key_rows(df, primary_key)
        report.blank_keys, report.blank_key_rows = len(blanks), blanks[: table.EXAMPLES]
        dupes = table.duplicate_keys(df, primary_key)
        report.duplicate_key_count = len(dupes)
        report.duplicate_keys = [{"key": k, "rows": r} for k, r in dupes[: table.EXAMPLES]]
        try:
            table.check_primary_key(df, primary_key, source=csv_path)
        except UserError as exc:
            report.errors.append(str(exc))
        _check_case_clashes(report, df[primary_key].tolist(), primary_key, csv_path)
        too_long = [pk for pk in df[primary_key].tolist() if pk and _name_too_long(pk)]
        if too_long:
            report.errors.append(
                f"Primary key column {primary_key!r} of {csv_path} has {len(too_long)} value(s) "
                f"whose mask file name would be longer than {mask_files.MAX_NAME_BYTES} bytes (first: "
                f"{too_long[0][:40]!r}...): pick a shorter key."
            )

    groups_ok = True
    if len(set(group_by)) != len(group_by):
        report.errors.append("A group-by column is listed twice: list each column once.")
        groups_ok = False
    try:
        table.check_columns(report.columns, group_by, what="Group-by", source=csv_path)
    except UserError as exc:
        report.errors.append(str(exc))
        groups_ok = False
    if groups_ok:
        groups = table.group_rows(df, group_by)
        report.groups = len(groups)
        report.group_sizes = [
            {"key": g.key, "label": g.label, "size": len(g.indices)}
            for g in groups[:REPORT_GROUP_LIMIT]
        ]

    try:
        template = table.parse_image_path(img_path, report.columns, source=csv_path)
    except UserError as exc:
        report.errors.append(str(exc))
        return report
    root = images_root(image_root, csv_path)
    if not root.is_dir():
        report.errors.append(
            f"Image root {root} is not a folder: choose the folder that image paths are relative to."
        )
        return report
    texts = template.render_columns(df)
    keys = df[primary_key].tolist() if key_ok else [str(table.csv_row(i)) for i in range(len(df))]
    found: list[tuple[str, Path]] = []
    for index, text in enumerate(texts):
        path = table.resolve_image_path(text, root) if text.strip() else None
        if index < table.EXAMPLES:
            report.path_examples.append(str(path) if path is not None else "(blank image path)")
        if path is not None and path.is_file():
            found.append((keys[index], path))
            continue
        report.images_missing += 1
        if len(report.missing_examples) < table.EXAMPLES:
            shown = str(path) if path is not None else "(blank image path)"
            report.missing_examples.append(f"{shown} (CSV row {table.csv_row(index)})")
    report.images_found = len(found)
    if not found:
        report.errors.append(
            f"None of the {len(df)} image paths exist (first: {report.missing_examples[0]}): "
            f"check the image root ({root}) and the image path column or template."
        )
    elif report.images_missing:
        report.warnings.append(
            f"{report.images_missing} of {len(df)} images are missing (first: "
            f"{report.missing_examples[0]}); they will be skipped."
        )
    if check_images and found and image_check_limit > 0:
        _check_image_headers(report, found, image_check_limit)
    return report


def filter_rows(df: Any, filter_query: str) -> Any:
    """The rows an original SST-GUI `filter_query` selects (renumbered from 0)."""
    if is_whole_table_filter(filter_query):
        return df
    # sqlglot loads only for a project with a filter.
    from sst_desktop.data.sqlexpr import parse_filter

    keep = parse_filter(filter_query, list(df.columns)).keep(df)
    return df.iloc[keep].reset_index(drop=True)


def _check_case_clashes(
    report: ValidationReport, keys: list[str], primary_key: str, csv_path: Path
) -> None:
    """Keys that differ only in letter case name the same mask file on Windows and macOS."""
    first_row: dict[str, tuple[str, int]] = {}
    clashes: list[tuple[str, int, str, int]] = []
    for index, pk in enumerate(keys):
        folded = pk.casefold()
        seen = first_row.setdefault(folded, (pk, table.csv_row(index)))
        if seen[0] != pk:
            clashes.append((*seen, pk, table.csv_row(index)))
    if not clashes:
        return
    a, row_a, b, row_b = clashes[0]
    text = (
        f"Primary key column {primary_key!r} of {csv_path} has {len(clashes)} key(s) differing "
        f"from another only in letter case (first: {a!r} on row {row_a} and {b!r} on row {row_b}): "
        f"on Windows and macOS both would use the same mask file; make the keys differ by more "
        f"than case or pick another key column."
    )
    # Where file names ignore case, masks would silently overwrite each other: block creation.
    (report.errors if _CASE_INSENSITIVE_FILE_NAMES else report.warnings).append(text)


def _check_image_headers(
    report: ValidationReport, found: list[tuple[str, Path]], limit: int
) -> None:
    if len(found) > limit:  # an even spread, so a bad folder anywhere in the CSV shows up
        step = len(found) / limit
        found = [found[int(i * step)] for i in range(limit)]
    for pk, path in found:
        report.images_checked += 1
        try:
            images.image_size(path)
        except (ImageError, OSError) as exc:
            report.unreadable_count += 1
            if len(report.unreadable) < table.EXAMPLES:
                report.unreadable.append({"pk": pk, "path": str(path), "error": str(exc)})
    if report.unreadable_count:
        sampled = " (a sample)" if report.images_checked < report.images_found else ""
        report.warnings.append(
            f"{report.unreadable_count} of {report.images_checked} image(s) checked{sampled} "
            f"cannot be read (first: {report.unreadable[0]['path']}); they will be skipped."
        )
