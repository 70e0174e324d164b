"""The one fixed palette for object IDs, so an ID has the same colour in every view and export.

- ID 0 (background) is transparent.
- IDs 1-7: the Okabe-Ito colour-blind-safe qualitative colours (black left out, it hides on dark
  specimens): orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple.
  In position mask mode the quadrants 1-4 are therefore orange, sky blue, green and yellow.
- IDs 8-16: Paul Tol's "muted" qualitative scheme.
- IDs 17-255: a deterministic golden-ratio hue sequence with cycling saturation and brightness.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from sst_desktop.data.masks import to_id_mask
from sst_desktop.errors import MaskError

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
TOL_MUTED = [
    "#CC6677",
    "#332288",
    "#DDCC77",
    "#117733",
    "#88CCEE",
    "#882255",
    "#44AA99",
    "#999933",
    "#AA4499",
]

_GOLDEN = 0.618033988749895
_SATURATIONS = (0.85, 0.6, 0.95, 0.7)
_VALUES = (0.95, 0.8, 0.65, 0.88, 0.72)


def _hex_to_rgb(hex_colour: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _build_palette() -> list[tuple[int, int, int]]:
    colours = [(0, 0, 0)]  # ID 0: never drawn
    colours += [_hex_to_rgb(c) for c in OKABE_ITO + TOL_MUTED]
    seen = set(colours)
    k = 0
    while len(colours) < 256:
        hue = (0.13 + k * _GOLDEN) % 1.0
        sat = _SATURATIONS[k % len(_SATURATIONS)]
        val = _VALUES[k % len(_VALUES)]
        k += 1
        rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        if rgb in seen:
            continue
        seen.add(rgb)
        colours.append(rgb)  # type: ignore[arg-type]
    return colours


PALETTE: list[tuple[int, int, int]] = _build_palette()
PALETTE_HEX: list[str] = ["#{:02x}{:02x}{:02x}".format(*c) for c in PALETTE]

# (256, 4) lookup table: RGBA per ID, alpha 0 for the background.
_RGBA_LUT = np.array([(*c, 255) for c in PALETTE], dtype=np.uint8)
_RGBA_LUT[0] = (0, 0, 0, 0)


def id_color(object_id: int) -> tuple[int, int, int]:
    """(r, g, b) of an object ID 0..255 (0 is the background and is drawn transparent)."""
    if not 0 <= int(object_id) <= 255:
        raise ValueError(f"object ID must be 0..255, got {object_id}")
    return PALETTE[int(object_id)]


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA image of an ID mask: palette colours, transparent background."""
    return _RGBA_LUT[to_id_mask(mask)]


def overlay(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    outline: bool = True,
) -> Image.Image:
    """RGB image with each object tinted in its palette colour (and outlined, by default)."""
    base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if base.ndim == 2:
        base = np.stack([base] * 3, axis=-1)
    ids = to_id_mask(mask)
    if ids.shape != base.shape[:2]:
        raise MaskError(
            f"Mask is {ids.shape[1]}x{ids.shape[0]} but the image is {base.shape[1]}x"
            f"{base.shape[0]}; a mask must have its image's size"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    out = np.array(base[:, :, :3], dtype=np.uint8)  # a writable copy
    rows = np.flatnonzero(ids.any(axis=1))
    if rows.size == 0:
        return Image.fromarray(out, mode="RGB")
    cols = np.flatnonzero(ids.any(axis=0))
    # Work only inside the objects' bounding box: masks are often small against big photos.
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    sub_ids, sub_out = ids[box], out[box]
    inside = sub_ids > 0
    colours = _RGBA_LUT[sub_ids[inside], :3].astype(np.float32)
    blended = sub_out[inside].astype(np.float32) * (1.0 - alpha) + colours * alpha
    sub_out[inside] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if outline:
        width = max(1, round(max(ids.shape) / 400))  # about 1 px per 400 px of image side
        edge = edges(sub_ids, width=width)
        sub_out[edge] = _RGBA_LUT[sub_ids[edge], :3]
    return Image.fromarray(out, mode="RGB")


def draw_contrast_outline(rgba: np.ndarray, ids: np.ndarray, width: int = 2) -> None:
    """Paint each object's inner edge black (light colours) or white (dark ones) into `rgba`: an ID
    whose colour matches the specimen (orange on an orange butterfly) still shows its outline."""
    edge = edges(ids, width=width)
    luma = rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    light = luma >= 128
    rgba[edge & light] = (0, 0, 0, 255)
    rgba[edge & ~light] = (255, 255, 255, 255)


def edges(ids: np.ndarray, width: int) -> np.ndarray:
    """Object pixels within `width` pixels of a different ID (the inner outline of each object)."""
    boundary = np.zeros(ids.shape, dtype=bool)
    # A pixel is on an edge when a 4-neighbour has another ID; image borders count as background.
    padded = np.pad(ids, 1, mode="constant")
    centre = padded[1:-1, 1:-1]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
        boundary |= neighbour != centre
    inside = ids > 0
    # Keep the outline inside its own object so neighbours keep their own colour at the border.
    return _dilate(boundary & inside, width - 1) & inside


def _dilate(b: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a boolean image by a (2r+1)-square, in O(pixels) with running sums per axis."""
    if radius <= 0:
        return b
    out = b
    for axis in (0, 1):
        n = out.shape[axis]
        csum = np.cumsum(out, axis=axis, dtype=np.int32)
        idx = np.arange(n)
        hi = np.take(csum, np.minimum(idx + radius, n - 1), axis=axis)
        lo = np.take(csum, np.maximum(idx - radius - 1, 0), axis=axis)
        shape = [1, 1]
        shape[axis] = n
        lo = np.where((idx - radius - 1 >= 0).reshape(shape), lo, 0)
        out = (hi - lo) > 0
    return out
