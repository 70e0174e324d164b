"""`--view` helpers: find the project a mask file belongs to, render masks over their images."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from sst_desktop import fileio
from sst_desktop.data import registry
from sst_desktop.data.images import load_image
from sst_desktop.data.mask_files import pk_from_mask_file_name
from sst_desktop.data.masks import read_mask
from sst_desktop.data.palette import overlay
from sst_desktop.data.project import Project
from sst_desktop.errors import UserError

MASK_FOLDERS = {"pred_masks": "pred", "ref_masks": "ref"}

# Each tile of a multi-mask sheet fits in this many pixels (a single mask keeps its full size).
TILE_MAX_SIDE = 768
# A sheet of many masks shrinks its tiles to stay within this size (memory; WebP allows 16383).
SHEET_MAX_SIDE = 8192
LABEL_HEIGHT = 22
GAP = 6


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same existing folder."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _registered_spec_for(root: Path) -> Path | None:
    """The spec path of a registered project whose root is `root`, if any."""
    for entry in registry.list_projects():
        entry_root, spec_path = entry.get("root"), entry.get("spec_path")
        if entry_root and spec_path and _same_folder(entry_root, root):
            return Path(spec_path)
    return None


def find_mask_context(mask_path: str | os.PathLike) -> tuple[Any, str, str]:
    """(project, pk, kind) of `<root>/pred_masks/<pk>.png` ("pred") or `<root>/ref_masks/` ("ref")."""
    path = Path(mask_path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"mask file {mask_path} does not exist: check the path")
    kind = MASK_FOLDERS.get(path.parent.name)
    if kind is None:
        raise UserError(
            f"mask file {mask_path} is not in a project's pred_masks/ or ref_masks/ folder: "
            "give a mask from a project folder"
        )
    root = path.parent.parent
    spec_path: Path | None = root / "spec.json"
    if not spec_path.is_file():
        spec_path = _registered_spec_for(root)
    if spec_path is None:
        raise UserError(
            f"no project found for {mask_path}: {root} has no spec.json and no registered project "
            "uses it as its folder; open the project in the app once, or put its spec.json there"
        )
    project = Project.open(spec_path)
    pk = pk_from_mask_file_name(path.name)
    try:
        frame = project.frame(pk)
    except (KeyError, UserError):
        frame = None
    if frame is None:
        raise UserError(
            f"mask file {mask_path}: the project {spec_path} has no frame with primary key {pk!r}"
        )
    return project, pk, kind


def overlay_for(mask_path: str | os.PathLike, alpha: float = 0.5) -> tuple[Any, str]:
    """The coloured overlay (PIL image) of one mask over its image, and a caption for it."""
    project, pk, kind = find_mask_context(mask_path)
    image = load_image(project.frame(pk).image_path)
    mask = read_mask(mask_path, expected_size=image.size)
    return overlay(image, mask, alpha=alpha), f"{pk} ({kind})"


def _grid_columns(count: int) -> int:
    """Columns of a near-square grid of `count` tiles."""
    return math.ceil(math.sqrt(count))


def tile_side(count: int) -> int:
    """Largest tile side for `count` tiles: TILE_MAX_SIDE, less when the sheet would get too big."""
    cols = _grid_columns(count)
    fit = (SHEET_MAX_SIDE - (cols + 1) * GAP) // cols - LABEL_HEIGHT
    return max(16, min(TILE_MAX_SIDE, fit))


def _fit(img: Any, max_side: int) -> Any:
    """`img` as RGB, scaled down (never up) to fit `max_side`."""
    img = img.convert("RGB")
    factor = min(1.0, max_side / max(img.size))
    if factor < 1.0:
        size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def tile_images(images: list[Any], captions: list[str], max_side: int = TILE_MAX_SIDE) -> Any:
    """Several images in a near-square grid, each scaled to fit a tile, with its caption above."""
    if len(images) == 1:
        return images[0].convert("RGB")
    cols = _grid_columns(len(images))
    rows = math.ceil(len(images) / cols)
    scaled = [_fit(img, max_side) for img in images]
    cell_w = max(img.width for img in scaled)
    cell_h = max(img.height for img in scaled) + LABEL_HEIGHT
    sheet = Image.new(
        "RGB", (cols * cell_w + (cols + 1) * GAP, rows * cell_h + (rows + 1) * GAP), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for index, (img, caption) in enumerate(zip(scaled, captions, strict=True)):
        row, col = divmod(index, cols)
        x = GAP + col * (cell_w + GAP)
        y = GAP + row * (cell_h + GAP)
        draw.text((x + 2, y + 4), caption, fill="black")
        sheet.paste(img, (x, y + LABEL_HEIGHT))
    return sheet


def _check_output_path(out: Path, mask_paths: list[str | os.PathLike]) -> None:
    """Refuse to write an overlay where it would replace a mask: the next run would take an RGB
    picture for a finished prediction (or a reference)."""
    target = out.resolve()
    if target.parent.name in MASK_FOLDERS:
        raise UserError(
            f"output {out}: {target.parent} is a mask folder; an overlay there would pass for a "
            "mask. Write it elsewhere, e.g. --out overlay.png"
        )
    for mask_path in mask_paths:
        if Path(mask_path).expanduser().resolve() == target:
            raise UserError(f"output {out} is one of the masks shown: choose another file name")
    if target.is_file():
        try:
            with Image.open(target) as im:
                is_mask = im.mode not in ("RGB", "RGBA")
        except Exception:
            is_mask = False  # not an image: an ordinary file the user chose to replace
        if is_mask:
            raise UserError(
                f"output {out} exists and is a single-channel image, likely an ID mask: choose "
                "another file name (overlays are RGB)"
            )


def render_overlays(
    mask_paths: list[str | os.PathLike], out_path: str | os.PathLike, alpha: float = 0.5
) -> Path:
    """Write the masks over their images (tiled if several) to `out_path` atomically."""
    if not mask_paths:
        raise UserError("no mask given: name at least one MASK.png")
    out = Path(out_path).expanduser()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(out.suffix.lower())
    if fmt is None:
        raise UserError(f"output {out_path}: use a .png, .jpg or .webp file name")
    _check_output_path(out, mask_paths)
    # Several masks: each overlay is shrunk to its tile at once, so only tiles are held.
    side = tile_side(len(mask_paths)) if len(mask_paths) > 1 else None
    images, captions = [], []
    for mask_path in mask_paths:
        image, caption = overlay_for(mask_path, alpha=alpha)
        images.append(image if side is None else _fit(image, side))
        captions.append(caption)
    sheet = tile_images(images, captions, max_side=side or TILE_MAX_SIDE)
    fileio.atomic_write(out, lambda f: sheet.save(f, format=fmt))
    return out
