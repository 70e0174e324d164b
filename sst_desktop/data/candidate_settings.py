"""Candidate-mask settings of a project: presets, plain-word names with help, validation.

A project stores them in its spec under "candidates" as a preset name plus the settings changed
from it, e.g. {"preset": "fast", "points_per_side": 24}; no key means the machine's default preset
(fast without a GPU, thorough with one).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from sst_desktop.errors import UserError


@dataclass
class CandidateParams:
    """Automatic-mask-generator settings; the defaults are the original SST-GUI's."""

    points_per_side: int = 48  # grid of points_per_side**2 single-click prompts
    points_per_batch: int = 64  # prompts decoded at once (memory vs speed)
    pred_iou_thresh: float = 0.88  # keep masks whose predicted IoU is above this (0 = keep all)
    stability_score_thresh: float = 0.95  # keep masks at least this stable (0 = keep all)
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7  # box IoU above which a duplicate mask is dropped
    crop_n_layers: int = 0  # >0 also runs on 2x2, 4x4, ... crops (slower, finds small parts)
    crop_nms_thresh: float = 0.7
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0  # full-image pixels; smaller islands/holes are cleaned up
    max_side: int = 2048  # longer images are downscaled for the generator
    use_m2m: bool = False  # one extra refinement pass per mask (slower)
    multimask_output: bool = True

    _LIMITS = {
        "points_per_side": (1, 256),
        "points_per_batch": (1, 4096),
        "pred_iou_thresh": (0.0, 1.0),
        "stability_score_thresh": (0.0, 1.0),
        "stability_score_offset": (0.0, 100.0),
        "box_nms_thresh": (0.0, 1.0),
        "crop_n_layers": (0, 4),
        "crop_nms_thresh": (0.0, 1.0),
        "crop_n_points_downscale_factor": (1, 16),
        "min_mask_region_area": (0, 10**9),
        "max_side": (64, 100_000),
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise UserError(f"Candidate setting {f.name}={value!r} must be true or false.")
                setattr(self, f.name, bool(value))
                continue
            lo, hi = self._LIMITS[f.name]
            is_int = isinstance(lo, int) and not isinstance(lo, bool)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if (
                isinstance(value, bool)
                or math.isnan(number)
                or not lo <= number <= hi
                or (is_int and number != int(number))
            ):
                kind = "a whole number" if is_int else "a number"
                raise UserError(
                    f"Candidate setting {f.name}={value!r} is invalid: use {kind} from {lo} to {hi}."
                )
            setattr(self, f.name, int(number) if is_int else number)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CandidateParams:
        """Params from a JSON-like dict (missing keys keep defaults; unknown keys -> UserError)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"Unknown candidate setting {unknown[0]!r}: use {', '.join(sorted(known))}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all settings (for the UI and JSON)."""
        return asdict(self)


# Presets are changes from CandidateParams' defaults. "thorough" is the original SST-GUI setup;
# "fast" asks 9x fewer prompts on an image of at most 1024 px, for CPUs, in steps of 16 prompts
# so the first candidates show soon after the image is encoded.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"points_per_side": 16, "points_per_batch": 16, "max_side": 1024},
    "thorough": {},
}

# Plain-word label and one-line help per setting, in the order the settings panel shows them.
HELP: dict[str, tuple[str, str]] = {
    "points_per_side": (
        "Points across the image",
        "A grid of this many points per side is clicked automatically; more finds smaller parts "
        "but takes longer (time grows with the square).",
    ),
    "pred_iou_thresh": (
        "Minimum confidence",
        "Drop masks SAM2 itself rates below this (0 to 1; 0 keeps all).",
    ),
    "stability_score_thresh": (
        "Minimum stability",
        "Drop masks whose outline moves when the cut-off changes a little (0 to 1; 0 keeps all).",
    ),
    "box_nms_thresh": (
        "Duplicate overlap",
        "Two masks whose boxes overlap more than this count as duplicates; the better one stays.",
    ),
    "min_mask_region_area": (
        "Smallest island or hole (pixels)",
        "Fill holes and remove specks smaller than this many image pixels (0 = off).",
    ),
    "max_side": (
        "Working size (pixels)",
        "Larger photos are shrunk to this longer side first; masks come back at full size.",
    ),
    "crop_n_layers": (
        "Zoomed passes",
        "Also search zoomed-in tiles (1 = 2x2 tiles, 2 = also 4x4); finds small parts, much slower.",
    ),
    "crop_n_points_downscale_factor": (
        "Fewer points in zoomed passes",
        "Divide the points per side by this in each zoomed pass.",
    ),
    "crop_nms_thresh": (
        "Duplicate overlap between tiles",
        "Like duplicate overlap, between masks from different zoomed passes.",
    ),
    "stability_score_offset": (
        "Stability cut-off shift",
        "How far the cut-off moves when measuring stability (higher is stricter).",
    ),
    "points_per_batch": (
        "Points per step",
        "Points decoded together; candidates appear after each step (memory against speed).",
    ),
    "multimask_output": (
        "Three guesses per point",
        "Let each point propose a part, a larger part and the whole object.",
    ),
    "use_m2m": (
        "Refine each mask once",
        "Run each mask through SAM2 again using itself as a hint; slower, smoother.",
    ),
}


def default_preset(has_gpu: bool) -> str:
    """The preset a project starts with on this machine."""
    return "thorough" if has_gpu else "fast"


def resolve(stored: dict[str, Any] | None, has_gpu: bool) -> tuple[str, CandidateParams]:
    """(preset name, effective params) of a spec's "candidates" value; UserError when bad."""
    stored = dict(stored or {})
    preset = stored.pop("preset", None) or default_preset(has_gpu)
    if preset not in PRESETS:
        raise UserError(f"Candidate preset {preset!r} is unknown: use one of {', '.join(PRESETS)}.")
    return preset, CandidateParams.from_dict({**PRESETS[preset], **stored})


def to_stored(preset: str, params: CandidateParams) -> dict[str, Any]:
    """What a spec stores: the preset and the settings that differ from it."""
    if preset not in PRESETS:
        raise UserError(f"Candidate preset {preset!r} is unknown: use one of {', '.join(PRESETS)}.")
    base = CandidateParams.from_dict(PRESETS[preset]).to_dict()
    changed = {k: v for k, v in params.to_dict().items() if base[k] != v}
    return {"preset": preset, **changed}


def describe(stored: dict[str, Any] | None, has_gpu: bool) -> dict[str, Any]:
    """Everything the settings panel needs: values, preset, presets, labels and help."""
    preset, params = resolve(stored, has_gpu)
    return {
        "preset": preset,
        "default_preset": default_preset(has_gpu),
        "values": params.to_dict(),
        "presets": {
            name: CandidateParams.from_dict(values).to_dict() for name, values in PRESETS.items()
        },
        "help": {key: {"label": label, "help": text} for key, (label, text) in HELP.items()},
    }
