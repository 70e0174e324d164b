"""The SQL string expressions of original SST-GUI specs, evaluated over CSV rows without SQL.

`img_path` may be an expression such as `CONCAT('/data', RIGHT(filepath, LEN(filepath) - 6))` and
`filter_query` a `SELECT * FROM master_df WHERE ...`. sqlglot parses the text; only the node types
in the whitelist below are turned into small Python functions over a row's values. No SQL engine
runs and nothing can reach a file: anything outside the whitelist is a one-line error naming it.

SQL semantics kept: an empty CSV cell is NULL; `||`, functions and comparisons give NULL when an
input is NULL; CONCAT skips NULLs; a WHERE keeps the rows whose condition is true.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

# Imported by name (not read="duckdb") so that the standalone bundle's analysis finds it.
from sqlglot.dialects.duckdb import DuckDB

from sst_desktop.errors import UserError

Value = Any  # str, int, float, bool or None (NULL)
Row = dict[str, str]
Evaluator = Callable[[Row], Value]

STRING_FUNCTIONS = (
    "CONCAT, ||, LEFT, RIGHT, SUBSTR/SUBSTRING, LEN/LENGTH, REPLACE, LOWER, UPPER, TRIM and + - * "
    "on whole numbers"
)
FILTER_SYNTAX = (
    "SELECT * FROM master_df WHERE ... with =, <>, <, <=, >, >=, AND, OR, NOT, IN (...), LIKE, "
    "IS [NOT] NULL on columns"
)
TABLE_NAME = "master_df"
_DIALECT = DuckDB  # the original SST-GUI ran its SQL on DuckDB


class SqlExpressionError(UserError):
    """An expression that cannot be parsed, or uses something outside the whitelist."""


@dataclass(frozen=True)
class SqlExpression:
    """A parsed, whitelisted value expression: evaluate it on a row with `evaluate`."""

    source: str
    columns: list[str]  # CSV columns it reads, in order of first use
    _fn: Evaluator

    def evaluate(self, row: Row) -> Value:
        """The expression's value for one row (column name -> cell text)."""
        return self._fn(row)

    def render(self, values: dict[str, str]) -> str:
        """The path text for one row; NULL gives "" (a blank path, reported as missing)."""
        value = self._fn(values)
        return "" if value is None else _text(value)

    def render_columns(self, df: Any) -> list[str]:
        """Path text for every row of a pandas DataFrame, in row order."""
        return [self.render(row) for row in _rows(df, self.columns)]


@dataclass(frozen=True)
class SqlFilter:
    """A parsed `SELECT * FROM master_df [WHERE ...]`; `keep` tells which rows it selects."""

    source: str
    columns: list[str]
    _fn: Evaluator | None  # None: no WHERE, every row

    def keep(self, df: Any) -> list[int]:
        """Positions of the rows of `df` whose WHERE condition is true."""
        if self._fn is None:
            return list(range(len(df)))
        return [i for i, row in enumerate(_rows(df, self.columns)) if self._fn(row) is True]


def _rows(df: Any, columns: Sequence[str]) -> list[Row]:
    if not columns:
        return [{} for _ in range(len(df))]
    values = [df[c].tolist() for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def parse_expression(
    text: str, columns: Sequence[str] | None = None, *, what: str = "img_path"
) -> SqlExpression:
    """Parse and whitelist a value expression; `columns` (when known) are checked by name."""
    tree = _parse_one(text, what)
    compiler = _Compiler(text, columns, what)
    fn = compiler.value(tree)
    return SqlExpression(source=text, columns=compiler.used, _fn=fn)


def parse_filter(
    text: str, columns: Sequence[str] | None = None, *, what: str = "filter_query"
) -> SqlFilter:
    """Parse and whitelist `SELECT * FROM master_df [WHERE condition]`."""
    tree = _parse_one(text, what)
    if not isinstance(tree, exp.Select):
        raise SqlExpressionError(f"{what} {_show(text)} is not a SELECT: write {FILTER_SYNTAX}.")
    extra = sorted(
        k for k, v in tree.args.items() if v and k not in ("expressions", "from_", "from", "where")
    )
    source = tree.args.get("from_") or tree.args.get("from")
    table = source.this if isinstance(source, exp.From) else None
    star = len(tree.expressions) == 1 and isinstance(tree.expressions[0], exp.Star)
    if (
        extra
        or not star
        or not isinstance(table, exp.Table)
        or table.name != TABLE_NAME
        or table.args.get("db")
        or table.args.get("catalog")
    ):
        part = f" (it has {extra[0].upper()})" if extra else ""
        raise SqlExpressionError(
            f"{what} {_show(text)} is not a plain row filter{part}: write {FILTER_SYNTAX}."
        )
    where = tree.args.get("where")
    compiler = _Compiler(text, columns, what)
    fn = compiler.condition(where.this) if where is not None else None
    return SqlFilter(source=text, columns=compiler.used, _fn=fn)


def _show(text: str) -> str:
    short = " ".join(text.split())
    return repr(short if len(short) <= 80 else short[:77] + "...")


def _parse_one(text: str, what: str) -> exp.Expression:
    try:
        trees = [t for t in sqlglot.parse(text, read=_DIALECT) if t is not None]
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        detail = str(first.get("description") or "syntax error")
        if "<class" in detail:  # sqlglot's wording for an operand missing at the end
            detail = "incomplete expression"
        where = f" at column {first['col']}" if first.get("col") else ""
        raise SqlExpressionError(
            f"{what} {_show(text)} is not valid SQL ({detail[:100]}{where}): check quotes, "
            f"brackets and operators."
        ) from None
    except sqlglot.errors.SqlglotError as exc:
        raise SqlExpressionError(
            f"{what} {_show(text)} is not valid SQL ({str(exc)[:100]}): check quotes and brackets."
        ) from None
    if len(trees) != 1:
        raise SqlExpressionError(f"{what} {_show(text)} must be a single SQL expression.")
    return trees[0]


def _node_name(node: exp.Expression) -> str:
    """The SQL name of a function or construct, for error messages."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    if isinstance(node, exp.Func):
        # sqlglot normalises names (regexp_matches -> REGEXP_LIKE): show DuckDB's spelling.
        with contextlib.suppress(Exception):
            match = re.match(r"[A-Za-z_][A-Za-z0-9_]*(?=\()", node.sql(dialect=_DIALECT))
            if match:
                return match.group(0).upper()
        return node.sql_name()
    return _OPERATORS.get(node.key, node.key.upper())


# Names of non-function constructs as a user wrote them.
_OPERATORS = {
    "div": "/",
    "mod": "%",
    "intdiv": "//",
    "select": "a subquery",
    "subquery": "a subquery",
    "star": "*",
}


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Value) -> int | float | None:
    """A value as a number (cell text is converted); None when it is no number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None


def _integer(value: Value, fn: str, what: str, source: str) -> int | None:
    if value is None:
        return None
    number = _number(value)
    if not isinstance(number, int):
        raise SqlExpressionError(
            f"{what} {_show(source)}: {fn} needs a whole number, got {value!r}."
        )
    return number


@functools.lru_cache(maxsize=256)
def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    out = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(out, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _left(s: str, n: int) -> str:
    return s[:n] if n >= 0 else s[: max(len(s) + n, 0)]


def _right(s: str, n: int) -> str:
    if n >= 0:
        return s[len(s) - n :] if n else ""
    return s[-n:]


def _substring(s: str, start: int, length: int | None) -> str:
    """SQL SUBSTRING: 1-based start; a start before 1 eats into the length."""
    end = len(s) + 1 if length is None else start + length
    begin = max(start, 1)
    return s[begin - 1 : max(end - 1, begin - 1)]


class _Compiler:
    """Turns a whitelisted sqlglot tree into nested Python closures."""

    def __init__(self, source: str, columns: Sequence[str] | None, what: str) -> None:
        self.source = source
        self.columns = list(columns) if columns is not None else None
        self.what = what
        self.used: list[str] = []

    def refuse(self, node: exp.Expression, allowed: str) -> SqlExpressionError:
        return SqlExpressionError(
            f"{self.what} {_show(self.source)} uses {_node_name(node)}, which SST Desktop does "
            f"not evaluate: use only {allowed}."
        )

    def column(self, node: exp.Column) -> Evaluator:
        if node.table:
            raise SqlExpressionError(
                f"{self.what} {_show(self.source)}: write column {node.name!r} without a table name."
            )
        name = node.name
        if self.columns is not None and name not in self.columns:
            # DuckDB matches unquoted names regardless of letter case.
            matches = [c for c in self.columns if c.lower() == name.lower()]
            if len(matches) != 1:
                shown = ", ".join(repr(c) for c in self.columns[:30])
                raise SqlExpressionError(
                    f"{self.what} {_show(self.source)} uses column {name!r}, which is not in the "
                    f"CSV: use one of {shown}."
                )
            name = matches[0]
        if name not in self.used:
            self.used.append(name)
        return lambda row: row.get(name) or None  # an empty cell is NULL

    # -- values

    def value(self, node: exp.Expression) -> Evaluator:
        """A value expression: columns, literals, string functions, integer arithmetic."""
        if isinstance(node, exp.Paren):
            return self.value(node.this)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Null):
            return lambda row: None
        if isinstance(node, exp.Literal):
            text = str(node.this)
            if node.is_string:
                return lambda row: text
            number = _number(text)
            return lambda row: number
        if isinstance(node, exp.Neg):
            inner = self.value(node.this)
            return self._arith(lambda row: 0, inner, lambda a, b: a - b, "-")
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
            op = {exp.Add: lambda a, b: a + b, exp.Sub: lambda a, b: a - b}.get(
                type(node), lambda a, b: a * b
            )
            sign = {exp.Add: "+", exp.Sub: "-"}.get(type(node), "*")
            return self._arith(self.value(node.this), self.value(node.expression), op, sign)
        if isinstance(node, exp.DPipe):
            left, right = self.value(node.this), self.value(node.expression)

            def pipe(row: Row) -> Value:
                a, b = left(row), right(row)
                return None if a is None or b is None else _text(a) + _text(b)

            return pipe
        if isinstance(node, exp.Concat):
            parts = [self.value(p) for p in node.expressions]
            return lambda row: "".join(_text(v) for v in (p(row) for p in parts) if v is not None)
        return self.function(node)

    def _arith(self, left: Evaluator, right: Evaluator, op: Callable, sign: str) -> Evaluator:
        def fn(row: Row) -> Value:
            a, b = left(row), right(row)
            if a is None or b is None:
                return None
            x, y = (
                _integer(a, sign, self.what, self.source),
                _integer(b, sign, self.what, self.source),
            )
            return op(x, y)

        return fn

    def function(self, node: exp.Expression) -> Evaluator:
        what, source = self.what, self.source
        if isinstance(node, (exp.Left, exp.Right)):
            name = "LEFT" if isinstance(node, exp.Left) else "RIGHT"
            cut = _left if isinstance(node, exp.Left) else _right
            s, n = self.value(node.this), self.value(node.expression)

            def side(row: Row) -> Value:
                text, count = s(row), _integer(n(row), name, what, source)
                return None if text is None or count is None else cut(_text(text), count)

            return side
        if isinstance(node, exp.Substring):
            s, start = self.value(node.this), self.value(node.args["start"])
            length = self.value(node.args["length"]) if node.args.get("length") else None

            def substring(row: Row) -> Value:
                text = s(row)
                first = _integer(start(row), "SUBSTRING", what, source)
                count = _integer(length(row), "SUBSTRING", what, source) if length else None
                if text is None or first is None or (length is not None and count is None):
                    return None
                return _substring(_text(text), first, count)

            return substring
        if isinstance(node, exp.Length):
            s = self.value(node.this)
            return lambda row: None if (v := s(row)) is None else len(_text(v))
        if isinstance(node, (exp.Lower, exp.Upper)):
            s = self.value(node.this)
            case = str.lower if isinstance(node, exp.Lower) else str.upper
            return lambda row: None if (v := s(row)) is None else case(_text(v))
        if isinstance(node, exp.Replace):
            s, old, new = (
                self.value(node.this),
                self.value(node.expression),
                self.value(node.args["replacement"]),
            )

            def replace(row: Row) -> Value:
                values = (s(row), old(row), new(row))
                if any(v is None for v in values):
                    return None
                return _text(values[0]).replace(_text(values[1]), _text(values[2]))

            return replace
        if isinstance(node, exp.Trim):
            return self._trim(node)
        raise self.refuse(node, STRING_FUNCTIONS)

    def _trim(self, node: exp.Trim) -> Evaluator:
        s = self.value(node.this)
        chars = self.value(node.expression) if node.args.get("expression") else None
        position = str(node.args.get("position") or "BOTH").upper()
        if node.args.get("collation"):
            raise self.refuse(node, STRING_FUNCTIONS)

        def trim(row: Row) -> Value:
            text = s(row)
            strip = None if chars is None else chars(row)
            if text is None or (chars is not None and strip is None):
                return None
            text, strip = _text(text), None if strip is None else _text(strip)
            if position == "LEADING":
                return text.lstrip(strip)
            if position == "TRAILING":
                return text.rstrip(strip)
            return text.strip(strip)

        return trim

    # -- conditions (three-valued: True, False or None for unknown)

    def condition(self, node: exp.Expression) -> Evaluator:
        """A WHERE condition; a row is kept when it evaluates to True."""
        if isinstance(node, exp.Paren):
            return self.condition(node.this)
        if isinstance(node, exp.And):
            a, b = self.condition(node.this), self.condition(node.expression)

            def and_(row: Row) -> Value:
                x, y = a(row), b(row)
                if x is False or y is False:
                    return False
                return None if x is None or y is None else True

            return and_
        if isinstance(node, exp.Or):
            a, b = self.condition(node.this), self.condition(node.expression)

            def or_(row: Row) -> Value:
                x, y = a(row), b(row)
                if x is True or y is True:
                    return True
                return None if x is None or y is None else False

            return or_
        if isinstance(node, exp.Not):
            inner = self.condition(node.this)
            return lambda row: None if (v := inner(row)) is None else not v
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise self.refuse(node.expression, FILTER_SYNTAX)
            value = self.value(node.this)
            return lambda row: value(row) is None
        if isinstance(node, exp.Boolean):
            flag = bool(node.this)
            return lambda row: flag
        if isinstance(node, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
            return self._compare(node)
        if isinstance(node, exp.In):
            return self._in(node)
        if isinstance(node, (exp.Like, exp.ILike)):
            return self._like(node)
        raise self.refuse(node, FILTER_SYNTAX)

    def _compare(self, node: exp.Expression) -> Evaluator:
        test = {
            exp.EQ: lambda c: c == 0,
            exp.NEQ: lambda c: c != 0,
            exp.GT: lambda c: c > 0,
            exp.GTE: lambda c: c >= 0,
            exp.LT: lambda c: c < 0,
            exp.LTE: lambda c: c <= 0,
        }[type(node)]
        left, right = self.value(node.this), self.value(node.expression)
        return lambda row: None if (c := _cmp(left(row), right(row))) is None else test(c)

    def _in(self, node: exp.In) -> Evaluator:
        for key in ("query", "unnest", "field"):
            if node.args.get(key):
                raise self.refuse(node.args[key], FILTER_SYNTAX)
        value = self.value(node.this)
        options = [self.value(e) for e in node.expressions]

        def in_(row: Row) -> Value:
            v = value(row)
            if v is None:
                return None
            unknown = False
            for option in options:
                c = _cmp(v, option(row))
                if c == 0:
                    return True
                unknown = unknown or c is None
            return None if unknown else False

        return in_

    def _like(self, node: exp.Expression) -> Evaluator:
        if node.args.get("escape"):
            raise self.refuse(node, FILTER_SYNTAX)
        value, pattern = self.value(node.this), self.value(node.expression)
        ignore_case = isinstance(node, exp.ILike)

        def like(row: Row) -> Value:
            v, p = value(row), pattern(row)
            if v is None or p is None:
                return None
            return _like_regex(_text(p), ignore_case).fullmatch(_text(v)) is not None

        return like


def _cmp(a: Value, b: Value) -> int | None:
    """-1/0/1 comparing two values, None when either is NULL or a text is compared to a number.

    CSV cells are text: compared with a number (a literal or arithmetic), a cell is read as a
    number, as DuckDB does with a numeric column.
    """
    if a is None or b is None:
        return None
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        x, y = _number(a), _number(b)
        if x is None or y is None:
            return None
        return (x > y) - (x < y)
    x, y = _text(a), _text(b)
    return (x > y) - (x < y)
