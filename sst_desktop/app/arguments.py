"""Argument types at the API boundary: one check for every method, from its type hints.

JS can send any JSON value in any position; a string where a list is expected would otherwise be
split into characters, a dict where text is expected would reach a file path. Each argument is
checked against the method's annotation before the method runs, with a one-line error naming the
method, the argument and the expected type.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from sst_desktop.errors import UserError


class ArgumentError(UserError):
    """An API call whose arguments do not fit the method (the server answers 400)."""


_NAMES = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


_PLURALS = {str: "text", int: "whole numbers", float: "numbers", bool: "true/false values"}


def _describe(value: Any) -> str:
    """The JSON kind of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (decoded JSON) fits the annotation `hint`."""
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        # Numbers may come as numbers or as the text of a form field; the method converts them
        # with its own range check. true/false are no numbers.
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is list or origin is list:
        if not isinstance(value, list):
            return False
        (item,) = typing.get_args(hint) or (Any,)
        return all(_accepts(item, v) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # a type JSON cannot carry: the method checks it


def _expected(hint: Any) -> str:
    """An annotation in words: "a list of text or null"."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return "a list" if item is Any else f"a list of {_PLURALS.get(item, _expected(item))}"
    if origin is dict:
        return "an object"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


@functools.cache
def _hints(function: Callable) -> tuple[inspect.Signature, dict[str, Any]]:
    """The signature and the resolved annotations (one that cannot be resolved: unchecked)."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a name imported only for type checkers
        hints = {}
    return inspect.signature(function), hints


def check_arguments(function: Callable, args: tuple | list, name: str | None = None) -> None:
    """ArgumentError unless `args` (positional, as JS sends them) fit `function`'s signature and
    annotations; `self` is skipped for a plain function taken from a class."""
    signature, hints = _hints(function)
    params = [p for p in signature.parameters.values() if p.name != "self"]
    name = name or function.__name__
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(positional):
        raise ArgumentError(
            f"{name}: takes at most {len(positional)} argument(s), got {len(args)}."
        )
    for param, value in zip(positional, args, strict=False):
        hint = hints.get(param.name, Any)
        if not _accepts(hint, value):
            raise ArgumentError(
                f"{name}: argument {param.name!r} must be {_expected(hint)}, not {_describe(value)}."
            )
    missing = [p.name for p in positional[len(args) :] if p.default is p.empty]
    if missing:
        raise ArgumentError(f"{name}: missing argument(s) {', '.join(repr(m) for m in missing)}.")
