"""Part names: the spec's optional `labels` map from object ID to a name ("1": "left forewing")."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sst_desktop.errors import SpecError

MIN_ID, MAX_ID = 1, 255
MAX_NAME_LENGTH = 80

Labels = dict[int, str]


def parse_labels(value: Any, *, source: str, parts: bool = False) -> Labels:
    """Validate a `labels` value (JSON object of ID -> name) into {int ID: name}; one-line SpecError.

    `parts=True` words the errors for the app's part-name fields (parts and their names) instead
    of spec.json's key and IDs; `source` prefixes only the spec.json wording.
    """
    if value is None:
        return {}

    def fail(spec_text: str, parts_text: str) -> SpecError:
        return SpecError(parts_text if parts else f"{source}: key 'labels' {spec_text}")

    if not isinstance(value, Mapping):
        raise fail(
            f'must be an object such as {{"1": "left forewing", "2": "body"}}, not '
            f"{json.dumps(value)[:60]}.",
            'Part names must be an object such as {"1": "left forewing"}.',
        )
    out: Labels = {}
    seen: dict[str, int] = {}
    for key, name in value.items():
        text = str(key).strip()
        if not text.isdigit() or not MIN_ID <= int(text) <= MAX_ID:
            rule = f"whole numbers from {MIN_ID} to {MAX_ID} (0 is the background)."
            raise fail(
                f"has ID {json.dumps(key)}: IDs are {rule}",
                f"There is no part {json.dumps(key)}: parts are numbered with {rule}",
            )
        object_id = int(text)
        if object_id in out:
            raise fail(
                f"lists ID {object_id} twice: keep one.",
                f"Part {object_id} is named twice: keep one name.",
            )
        if not isinstance(name, str) or not name.strip():
            raise fail(
                f"gives ID {object_id} the name {json.dumps(name)[:40]}: use a non-empty text.",
                f"Part {object_id} cannot be named {json.dumps(name)[:40]}: type a name.",
            )
        clean = " ".join(name.split())
        if len(clean) > MAX_NAME_LENGTH:
            raise fail(
                f"the name of ID {object_id} is {len(clean)} characters long: keep it under "
                f"{MAX_NAME_LENGTH + 1}.",
                f"The name of part {object_id} is {len(clean)} characters long: keep it under "
                f"{MAX_NAME_LENGTH + 1}.",
            )
        folded = clean.casefold()
        if folded in seen:
            raise fail(
                f"names IDs {seen[folded]} and {object_id} both {clean!r}: give each part its "
                "own name.",
                f"Parts {seen[folded]} and {object_id} are both named {clean!r}: give each part "
                "its own name.",
            )
        seen[folded] = object_id
        out[object_id] = clean
    return dict(sorted(out.items()))


def labels_to_json(labels: Mapping[int, str]) -> dict[str, str]:
    """The spec.json form of `labels`: string keys, in ID order."""
    return {str(i): labels[i] for i in sorted(labels)}


def part_name(labels: Mapping[int, str] | None, object_id: int) -> str:
    """The part's name, or "ID n" when the project does not name it."""
    if labels and int(object_id) in labels:
        return labels[int(object_id)]
    return f"ID {int(object_id)}"


def describe_ids(labels: Mapping[int, str] | None, ids: Iterable[int]) -> str:
    """ "2 body, 3 head" (or "2, 3" without names), for messages and flags."""
    parts = []
    for object_id in ids:
        name = labels.get(int(object_id)) if labels else None
        parts.append(f"{int(object_id)} {name}" if name else str(int(object_id)))
    return ", ".join(parts)
