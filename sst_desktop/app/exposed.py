"""What every JS API method shares: JSON-able results, reworded errors and argument checks."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from sst_desktop.app.arguments import check_arguments
from sst_desktop.errors import UserError, describe_error

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class ApiError(RuntimeError):
    """An unexpected exception, reworded as "Class: message" for the UI (traceback in the log)."""

    _sst_described = True


def plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and sets into JSON-able Python values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    return str(value)


def exposed(method: F) -> F:
    """Wrap a JS API method: plain JSON results; unexpected errors logged and reworded."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any) -> Any:
        check_arguments(method, args)  # one check of JSON types for every method and caller
        try:
            return plain(method(self, *args))
        except UserError:
            raise
        except Exception as exc:
            log.error("api %s failed", method.__name__, exc_info=exc)
            raise ApiError(describe_error(exc)) from exc

    return wrapper  # type: ignore[return-value]


def int_arg(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer argument from JS, with a clear error naming it."""
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a whole number, got {value!r}.") from None
    if low is not None and number < low or high is not None and number > high:
        raise UserError(f"{name} must be between {low} and {high}, got {number}.")
    return number


def score(value: Any) -> float | None:
    """A model score rounded for the UI (None when absent or not a number)."""
    try:
        return None if value is None else round(float(value), 4)
    except (TypeError, ValueError):
        return None


def str_list(value: Any) -> list[str]:
    """A list of column names from a list or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value if str(v).strip()]


def clean_config(config: Any) -> dict[str, Any]:
    """A form's dict with blank strings turned into None."""
    if not isinstance(config, dict):
        raise UserError("The project configuration must be an object.")
    return {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in config.items()}
