"""Errors that reach the user as one readable line instead of a traceback."""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """The text a user sees for an exception: a UserError as is, anything else with its class."""
    if isinstance(exc, UserError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UserError(Exception):
    """A problem with the user's input: the message names the file, row or key and the fix."""


class ImageError(UserError):
    """An image that cannot be opened, decoded or trusted."""


class MaskError(UserError):
    """A mask file or array that is malformed, of the wrong size, or has too many IDs."""


class SpecError(UserError):
    """A spec.json or project configuration that is malformed or inconsistent."""


class CheckpointError(UserError):
    """A SAM2 checkpoint that is missing, cannot be downloaded, or does not fit its variant."""
