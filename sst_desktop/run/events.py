"""The events a run reports, as the runner emits them and the CLI progress and the GUI's jobs read
them. They stay plain dicts at run time (JSON-able, and a new kind of event needs no change here
to pass through); these types say which keys each kind carries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict


class RunStart(TypedDict):
    """Planned: `targets` images to predict in `groups` groups, `skipped` already predicted."""

    type: Literal["run_start"]
    groups: int
    targets: int
    skipped: int


class ModelLoad(TypedDict):
    """SAM2 is being loaded (the first group that needs it)."""

    type: Literal["model_load"]
    variant: str
    device: str


class Download(TypedDict):
    """Checkpoint download progress in bytes (`total` None when the server does not say)."""

    type: Literal["download"]
    done: int
    total: int | None


class GroupStart(TypedDict):
    """A group's propagation begins."""

    type: Literal["group_start"]
    key: str
    label: str
    title: NotRequired[str]  # the group's values as the screens show them
    references: int
    targets: int
    skipped: int


class GroupEnd(TypedDict):
    """A group's propagation ended."""

    type: Literal["group_end"]
    key: str
    label: str
    title: NotRequired[str]  # the group's values as the screens show them


class GroupSkipped(TypedDict):
    """A group was left out (no usable reference, or an error stopped it)."""

    type: Literal["group_skipped"]
    key: str
    label: str
    title: NotRequired[str]  # the group's values as the screens show them
    reason: str


class _FrameExtra(TypedDict, total=False):
    reference: bool  # True: a reference mask that could not be used (not counted in progress)


class Frame(_FrameExtra):
    """One frame's outcome: written (with review flags), skipped or failed (with the reason)."""

    type: Literal["frame"]
    pk: str
    group: str
    status: Literal["written", "skipped", "failed"]
    reason: str | None
    flags: list[str]


class Progress(TypedDict):
    """Targets done of the total; images per second and seconds left once known."""

    type: Literal["progress"]
    done: int
    total: int
    ips: float | None
    eta_s: float | None


class RunEnd(TypedDict):
    """The run ended; `summary` is `RunSummary.to_dict()`."""

    type: Literal["run_end"]
    summary: dict[str, Any]


RunEvent = (
    RunStart
    | ModelLoad
    | Download
    | GroupStart
    | GroupEnd
    | GroupSkipped
    | Frame
    | Progress
    | RunEnd
)
EventSink = Callable[[RunEvent], None]
