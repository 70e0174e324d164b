"""The image metadata table: reading the CSV, image-path templates, primary keys and groups."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sst_desktop import fileio
from sst_desktop.errors import UserError

if TYPE_CHECKING:  # pandas is imported lazily: the GUI imports this module at startup
    import pandas as pd

    from sst_desktop.data.sqlexpr import SqlExpression

# Key and label of the single group when no group-by column is chosen.
ALL_GROUP_KEY = "all"
ALL_GROUP_LABEL = "all images"
# How an empty group-by value is shown in a group label ("none" stays a value of its own).
EMPTY_LABEL = "(empty)"
# ... and in a group key's slug (kept: keys of existing projects must not change).
_EMPTY_SLUG = "none"
# How many examples (duplicate keys, missing files...) an error message lists.
EXAMPLES = 5


def csv_row(index: int) -> int:
    """Row number a spreadsheet shows for data row `index` (0-based): the header is row 1."""
    return index + 2


# Field separators a CSV may use: comma; semicolon (spreadsheets in locales with a decimal comma);
# tab; pipe. Names for messages and the new-project screen.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def detect_delimiter(text: str) -> str:
    """The separator of a CSV's text: of `DELIMITERS`, the one that splits the header into the most
    columns and every one of the first rows into as many; "," when none does."""
    best, best_columns = ",", 1
    for delimiter in DELIMITERS:
        rows = [r for r in csv.reader(io.StringIO(text[:65536]), delimiter=delimiter) if r][:20]
        if not rows or len(rows[0]) <= best_columns:
            continue
        # The last row may be cut off by the sample; the others must match the header.
        if all(len(r) == len(rows[0]) for r in rows[:-1] or rows):
            best, best_columns = delimiter, len(rows[0])
    return best


def delimiter_name(delimiter: str) -> str:
    """ "semicolon" for ";" (the character itself if it has no name)."""
    return DELIMITERS.get(delimiter, repr(delimiter))


def check_delimiter(delimiter: str | None) -> str | None:
    """A delimiter from a user (None/"" = detect); UserError unless it is one of `DELIMITERS`."""
    if delimiter in (None, "", "auto"):
        return None
    names = {v: k for k, v in DELIMITERS.items()}
    delimiter = names.get(str(delimiter), "\t" if delimiter == "\\t" else str(delimiter))
    if delimiter not in DELIMITERS:
        choices = ", ".join(DELIMITERS.values())
        raise UserError(f"CSV delimiter {delimiter!r} is not supported: use one of {choices}.")
    return delimiter


def comma_separated(raw: bytes, delimiter: str) -> bytes:
    """A CSV file's bytes with `delimiter` as its separator, rewritten comma-separated (UTF-8)."""
    if delimiter == ",":
        return raw
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    text = raw.decode("utf-8-sig")
    writer.writerows(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return out.getvalue().encode("utf-8")


def read_csv(path: str | os.PathLike, delimiter: str | None = None) -> pd.DataFrame:
    """Read a CSV with every column as a string; a clear UserError for each way it can be unusable.

    `delimiter` None detects it (`detect_delimiter`); the result's `attrs["delimiter"]` says which.
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        raise UserError(f"CSV file {path} is a folder: choose the .csv file inside it.")
    special = fileio.special_file_kind(path)
    if special:
        raise UserError(f"CSV file {path} is {special}, not a file: choose the .csv file.")
    if not path.is_file():
        raise UserError(f"CSV file {path} does not exist: check the path.")
    try:
        raw = path.read_bytes()
    except OSError as exc:  # permissions, a file locked by a spreadsheet program...
        raise UserError(
            f"CSV file {path} cannot be read ({exc.strerror or exc}): check its permissions, or "
            f"close the program that has it open."
        ) from None
    if not raw.strip():
        raise UserError(
            f"CSV file {path} is empty: it needs a header row of column names and one row per image."
        )
    try:
        # "utf-8-sig" accepts and drops a byte-order mark (Excel writes one).
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"CSV file {path} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}, "
            f"likely Latin-1 or Windows-1252): save the CSV as UTF-8 and try again."
        ) from None
    try:
        delimiter = check_delimiter(delimiter) or detect_delimiter(text)
        df = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=delimiter
        )
    except pd.errors.EmptyDataError:
        raise UserError(
            f"CSV file {path} has no header row: add a first line with the column names."
        ) from None
    except pd.errors.ParserError as exc:
        detail = _parser_detail(exc)
        raise UserError(
            f"CSV file {path} cannot be parsed ({detail}): check that every row has as many "
            f"{delimiter_name(delimiter)}-separated fields as the header and that quotes are "
            f"balanced."
        ) from None
    header = _read_header(raw, delimiter)
    _check_header(path, header)
    if not isinstance(df.index, pd.RangeIndex):
        # pandas turns the first column into an index when rows have more fields than the header.
        raise UserError(
            f"CSV file {path} has rows with more fields than the header (first on line "
            f"{_first_long_line(raw, len(header), delimiter)}): remove the extra "
            f"{delimiter_name(delimiter)}s or name the extra column."
        )
    if len(header) != len(df.columns):
        raise UserError(
            f"CSV file {path} has a header of {len(header)} columns but pandas read "
            f"{len(df.columns)}: check the quoting of the first line."
        )
    df.columns = header
    df.attrs["delimiter"] = delimiter
    return df


def _parser_detail(exc: Exception) -> str:
    """pandas' parse error in spreadsheet rows (its "row N" counts from 0 at the header)."""
    text = str(exc).strip()
    detail = text.splitlines()[-1] if text else "parse error"
    unclosed = re.search(r"EOF inside string starting at row (\d+)", detail)
    if unclosed:
        return f"a quote opened on row {int(unclosed.group(1)) + 1} is never closed"
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", detail)
    if fields:
        expected, line, saw = fields.groups()
        return f"row {line} has {saw} fields where the header has {expected}"
    return detail


def _read_header(raw: bytes, delimiter: str = ",") -> list[str]:
    """The header's column names as written (pandas renames duplicates to "a.1"), stripped."""
    text = raw.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for row in reader:
        if any(cell.strip() for cell in row):
            return [cell.strip() for cell in row]
    return []


def _first_long_line(raw: bytes, n_fields: int, delimiter: str = ",") -> int:
    """Line number (header = 1) of the first record with more than `n_fields` fields."""
    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=delimiter)
    for record in reader:
        if len(record) > n_fields:
            return reader.line_num
    return 0


def _check_header(path: Path, header: list[str]) -> None:
    if not header:
        raise UserError(
            f"CSV file {path} has no header row: add a first line with the column names."
        )
    blank = [i + 1 for i, name in enumerate(header) if not name]
    if blank:
        raise UserError(
            f"CSV file {path} has a column without a name (column {blank[0]} of the header): "
            f"give every column a name in the first row."
        )
    seen: set[str] = set()
    dupes = []
    for name in header:
        if name in seen and name not in dupes:
            dupes.append(name)
        seen.add(name)
    if dupes:
        names = ", ".join(repr(d) for d in dupes[:EXAMPLES])
        raise UserError(
            f"CSV file {path} has duplicate column names ({names}): rename them so each column "
            f"name appears once in the header."
        )


def check_columns(
    columns: Sequence[str], wanted: Sequence[str], *, what: str, source: str | os.PathLike
) -> None:
    """UserError naming the first of `wanted` that is not a column, listing the columns."""
    for name in wanted:
        if name not in columns:
            raise UserError(
                f"{what} column {name!r} is not in {source}: use one of {_list(columns)}."
            )


def _list(items: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(repr(c) for c in list(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------
# Image path: a column name or a "{column}" template


@dataclass(frozen=True)
class ImagePathTemplate:
    """How a row becomes an image path: literal text and column values, never evaluated as code."""

    source: str  # what the user wrote
    parts: tuple[tuple[str, str | None], ...]  # (literal text, column name or None)

    @property
    def columns(self) -> list[str]:
        """Columns the template reads, in order of first use."""
        out: list[str] = []
        for _, field in self.parts:
            if field is not None and field not in out:
                out.append(field)
        return out

    def render(self, values: dict[str, str]) -> str:
        """The relative or absolute path text for one row's values."""
        out = ""
        blank_lead = False  # only empty placeholders so far
        for text, column in self.parts:
            if not out and blank_lead:
                # "{Dataset}/{name}" with an empty Dataset must stay relative, not become "/name".
                text = text.lstrip("/\\")
            out += text
            if column is not None:
                value = values[column]
                if not out and not value:
                    blank_lead = True
                out += value
        return out

    def render_columns(self, df: pd.DataFrame) -> list[str]:
        """Path text for every row of `df`, in row order."""
        columns = self.columns
        return (
            [
                self.render(dict(zip(columns, row, strict=True)))
                for row in zip(*(df[c].tolist() for c in columns), strict=True)
            ]
            if columns
            else [self.render({}) for _ in range(len(df))]
        )


def looks_like_sql(text: str) -> bool:
    """True for an SQL expression (`||`, a call or a quoted literal), not a name or a template."""
    return "{" not in text and bool(re.search(r"\|\||\(|'", text))


def parse_image_path(
    img_path: str, columns: Sequence[str], *, source: str | os.PathLike = "the CSV"
) -> ImagePathTemplate | SqlExpression:
    """Parse `img_path`: a column name, text with `{column}` placeholders (`{{` for a brace), or
    an SQL string expression of the original SST-GUI (evaluated by a whitelist, never run)."""
    if not isinstance(img_path, str) or not img_path.strip():
        raise UserError(
            "The image path is empty: give the column that holds each image's path, or a "
            "template such as {Dataset}/{Image_name}.JPG."
        )
    if img_path in columns:
        return ImagePathTemplate(source=img_path, parts=(("", img_path),))
    if looks_like_sql(img_path):
        # sqlglot loads only for a project whose image path is SQL.
        from sst_desktop.data.sqlexpr import parse_expression

        return parse_expression(img_path, columns, what="Image path")
    if "{" not in img_path and "}" not in img_path:
        raise UserError(
            f"Image path {img_path!r} is not a column of {source}: use one of {_list(columns)}, "
            f"or a template with {{column}} placeholders such as {{{columns[0] if columns else 'name'}}}.jpg."
        )
    try:
        parsed = list(string.Formatter().parse(img_path))
    except ValueError as exc:
        raise UserError(
            f"Image path template {img_path!r} is malformed ({exc}): put column names in single "
            f"braces, e.g. {{Dataset}}/{{Image_name}}.JPG, and write {{{{ or }}}} for a literal brace."
        ) from None
    parts: list[tuple[str, str | None]] = []
    for text, field, spec, conversion in parsed:
        if field is None:
            parts.append((text, None))
            continue
        if spec or conversion or field == "":
            raise UserError(
                f"Image path template {img_path!r} has a placeholder {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} that is not a plain column name: write only "
                f"{{column}} placeholders, e.g. {{Dataset}}/{{Image_name}}.JPG."
            )
        if field not in columns:
            raise UserError(
                f"Image path template {img_path!r} uses column {field!r}, which is not in "
                f"{source}: use one of {_list(columns)}."
            )
        parts.append((text, field))
    return ImagePathTemplate(source=img_path, parts=tuple(parts))


def resolve_image_path(text: str, image_root: Path) -> Path:
    """An image path from the CSV, made absolute against `image_root` when relative."""
    path = Path(os.path.expanduser(text)) if text.startswith("~") else Path(text)
    return path if path.is_absolute() else image_root / path


# ---------------------------------------------------------------------------------------------
# Primary key


def duplicate_keys(df: pd.DataFrame, key: str) -> list[tuple[str, list[int]]]:
    """Each duplicated non-blank key with the spreadsheet row numbers it appears on, first first."""
    rows: dict[str, list[int]] = {}
    for index, value in enumerate(df[key].tolist()):
        if value.strip():
            rows.setdefault(value, []).append(csv_row(index))
    return [(value, found) for value, found in rows.items() if len(found) > 1]


def blank_key_rows(df: pd.DataFrame, key: str) -> list[int]:
    """Spreadsheet row numbers whose key is empty or only spaces."""
    return [csv_row(i) for i, value in enumerate(df[key].tolist()) if not value.strip()]


def describe_duplicates(dupes: list[tuple[str, list[int]]]) -> str:
    """Short text such as "'a' (rows 2, 5), 'b' (rows 3, 4)" for the first few duplicates."""
    shown = ", ".join(
        f"{value!r} (rows {', '.join(map(str, rows[:EXAMPLES]))})"
        for value, rows in dupes[:EXAMPLES]
    )
    return shown + (f" and {len(dupes) - EXAMPLES} more" if len(dupes) > EXAMPLES else "")


def check_primary_key(df: pd.DataFrame, key: str, *, source: str | os.PathLike) -> None:
    """UserError unless `key` is a column with a unique, non-blank value on every row."""
    if not isinstance(key, str) or not key.strip():
        raise UserError(
            f"No primary key column chosen: pick a column of {source} whose value is unique per image."
        )
    check_columns(list(df.columns), [key], what="Primary key", source=source)
    blank = blank_key_rows(df, key)
    if blank:
        raise UserError(
            f"Primary key column {key!r} of {source} is blank on {len(blank)} row(s) (rows "
            f"{', '.join(map(str, blank[:EXAMPLES]))}; header = row 1): fill them in or pick "
            f"another key column."
        )
    dupes = duplicate_keys(df, key)
    if dupes:
        raise UserError(
            f"Primary key column {key!r} of {source} has {len(dupes)} duplicated value(s): "
            f"{describe_duplicates(dupes)} (header = row 1); make the keys unique or pick another "
            f"key column."
        )


# ---------------------------------------------------------------------------------------------
# Groups


@dataclass(frozen=True)
class RowGroup:
    """Rows that share the same group-by values, in CSV order."""

    key: str
    label: str
    values: dict[str, str]
    indices: list[int]  # 0-based data row positions


def slugify(text: str, max_len: int = 40) -> str:
    """Lower-case ASCII letters, digits and dashes only; "" when nothing is left."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return text[:max_len].strip("-")


def group_key(columns: Sequence[str], values: Sequence[str]) -> str:
    """Stable, URL- and file-name-safe key: readable slug + hash of the column names and values."""
    if not columns:
        return ALL_GROUP_KEY
    digest = hashlib.sha1(
        json.dumps([list(columns), list(values)], ensure_ascii=False).encode("utf-8")
    ).hexdigest()[:10]
    slug = slugify("-".join(v if v.strip() else _EMPTY_SLUG for v in values), max_len=40)
    return f"{slug}-{digest}" if slug else f"g-{digest}"


def _label_value(value: str) -> str:
    """A group-by value as shown in a label: "(empty)" for "", quoted when only blanks."""
    if not value:
        return EMPTY_LABEL
    return value if value.strip() else repr(value)


def group_title(values: Sequence[str]) -> str:
    """The group's values as people read them, e.g. "(empty) · dorsal" (as the UI's groupTitle)."""
    return " · ".join(_label_value(v) for v in values) or ALL_GROUP_LABEL


def group_label(columns: Sequence[str], values: Sequence[str]) -> str:
    """Readable label such as "Dataset=(empty), View=dorsal"."""
    if not columns:
        return ALL_GROUP_LABEL
    return ", ".join(f"{c}={_label_value(v)}" for c, v in zip(columns, values, strict=False))


def group_rows(df: pd.DataFrame, group_by: Sequence[str]) -> list[RowGroup]:
    """Groups in order of first appearance, each with its rows in CSV order."""
    group_by = list(group_by)
    if not group_by:
        return [RowGroup(ALL_GROUP_KEY, ALL_GROUP_LABEL, {}, list(range(len(df))))]
    buckets: dict[tuple[str, ...], list[int]] = {}
    for index, values in enumerate(zip(*(df[c].tolist() for c in group_by), strict=False)):
        buckets.setdefault(values, []).append(index)
    return [
        RowGroup(
            key=group_key(group_by, values),
            label=group_label(group_by, values),
            values=dict(zip(group_by, values, strict=False)),
            indices=indices,
        )
        for values, indices in buckets.items()
    ]
