"""The sample dataset shipped in `sst_desktop/sample_data/`, and the generator that made it.

Twelve generated specimen photos in two groups (a butterfly and a beetle species, six images each)
of three sizes, one stored sideways with EXIF orientation 6, plus `sample.csv` and exact
ground-truth ID masks in `gt_masks/`. Regenerate with `python -m sst_desktop.data.sample`.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from sst_desktop import fileio, paths
from sst_desktop.data.masks import write_mask

CSV_NAME = "sample.csv"
IMAGES_DIR = "images"
GT_MASKS_DIR = "gt_masks"

# How the sample CSV is meant to be configured (the project layer creates the sample project).
SAMPLE_CONFIG: dict = {
    "name": "Sample specimens",
    "primary_key": "Image_name",
    "img_path": "{Dataset}/{Image_name}.jpg",
    "group_by": ["Species"],
    "mask_mode": "original",
    # The first try should not mean a 900 MB download and minutes per image on a laptop CPU.
    "sam2": "sam2.1_hiera_tiny",
}
CSV_COLUMNS = ["Image_name", "Dataset", "Species", "View", "Catalogue_no"]

# Ground-truth object IDs of the sample masks (legs and antennae are left as background).
GT_IDS = {
    "Danaus plexippus": {"wings": 1, "body": 2},
    "Carabus auratus": {"elytra": 1, "pronotum": 2, "head": 3},
}

# Project-wide part names by ID (the beetle's elytra are its forewings, its pronotum the body part
# its legs attach to), as the sample project's spec `labels`.
PART_NAMES = {"1": "wings / elytra", "2": "body / pronotum", "3": "head"}

SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled, for smooth edges
JPEG_QUALITY = 82


def sample_dir() -> Path:
    """The installed `sample_data` folder."""
    return paths.resource_dir("sample_data")


def sample_csv_path() -> Path:
    """Path of the sample CSV."""
    return sample_dir() / CSV_NAME


def sample_image_root() -> Path:
    """Image root of the sample dataset (the CSV's `{Dataset}/{Image_name}.jpg` is relative to it)."""
    return sample_dir() / IMAGES_DIR


def sample_gt_mask_dir() -> Path:
    """Folder of the sample's ground-truth masks, `{Image_name}.png` at the displayed size."""
    return sample_dir() / GT_MASKS_DIR


def sample_labels() -> dict[int, str]:
    """The sample's part names by object ID."""
    return {int(k): v for k, v in PART_NAMES.items()}


def sample_config() -> dict:
    """SAMPLE_CONFIG with absolute `csv` and `image_root`, ready for project creation."""
    return {**SAMPLE_CONFIG, "csv": str(sample_csv_path()), "image_root": str(sample_image_root())}


# --- generator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleImage:
    """One row of the sample CSV and how to draw it."""

    name: str
    dataset: str
    species: str
    view: str
    catalogue_no: str
    size: tuple[int, int]  # displayed (width, height)
    seed: int
    orientation: int = 1  # EXIF orientation written to the JPEG


# The two species: dataset, species name, catalogue number prefix (by the name's first letters).
_SPECIES = {
    "DP": ("Lepidoptera", "Danaus plexippus", "NHM-L-"),
    "CA": ("Coleoptera", "Carabus auratus", "NHM-C-"),
}
# Name, view, catalogue number, displayed size, seed[, EXIF orientation written to the JPEG].
# Rows interleave the two species, so group members are not contiguous in the CSV.
_ROWS = """
DP_0001  dorsal   104331  640x480  11
DP_0002  dorsal   104332  800x600  12
CA_0001  dorsal   220871  480x640  21
DP_0003  ventral  104340  640x480  13
CA_0002  dorsal   220872  600x800  22
CA_0003  dorsal   220880  480x640  23  6
DP_0004  dorsal   104347  800x600  14
CA_0004  dorsal   220893  640x480  24
DP_0005  ventral  104352  480x640  15
CA_0005  dorsal   220901  480x640  25
DP_0006  dorsal   104366  640x480  16
CA_0006  dorsal   220915  600x800  26
"""


def _sample_image(row: str) -> SampleImage:
    """A SampleImage from one line of `_ROWS`."""
    name, view, number, size, seed, *orientation = row.split()
    dataset, species, prefix = _SPECIES[name[:2]]
    width, height = (int(v) for v in size.split("x"))
    return SampleImage(
        name=name,
        dataset=dataset,
        species=species,
        view=view,
        catalogue_no=prefix + number,
        size=(width, height),
        seed=int(seed),
        orientation=int(orientation[0]) if orientation else 1,
    )


SAMPLE_IMAGES: list[SampleImage] = [_sample_image(row) for row in _ROWS.strip().splitlines()]

Point = tuple[float, float]


class _Canvas:
    """An RGB picture and its ID mask, drawn together from shapes in specimen coordinates."""

    def __init__(self, size: tuple[int, int], background: tuple[int, int, int]):
        self.width, self.height = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
        self.image = Image.new("RGB", (self.width, self.height), background)
        self.mask = Image.new("L", (self.width, self.height), 0)
        self.draw = ImageDraw.Draw(self.image)
        self.mask_draw = ImageDraw.Draw(self.mask)
        self.transform: Callable[[Point], Point] = lambda p: p
        self.scale = 1.0

    def place(self, centre: Point, scale: float, angle_deg: float) -> None:
        """Map specimen coordinates (about -1..1, y down) onto the canvas."""
        cos_a, sin_a = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        cx, cy = centre[0] * SUPERSAMPLE, centre[1] * SUPERSAMPLE
        s = scale * SUPERSAMPLE
        self.scale = s
        self.transform = lambda p: (
            cx + s * (p[0] * cos_a - p[1] * sin_a),
            cy + s * (p[0] * sin_a + p[1] * cos_a),
        )

    def polygon(
        self,
        points: Sequence[Point],
        fill: tuple[int, int, int],
        outline: tuple[int, int, int] | None = None,
        width: float = 0.0,
        object_id: int | None = None,
    ) -> None:
        pts = [self.transform(p) for p in points]
        self.draw.polygon(pts, fill=fill)
        if outline is not None and width > 0:
            self.draw.line(
                [*pts, pts[0]], fill=outline, width=max(1, round(width * self.scale)), joint="curve"
            )
        if object_id is not None:
            self.mask_draw.polygon(pts, fill=object_id)
            if outline is not None and width > 0:
                self.mask_draw.line(
                    [*pts, pts[0]],
                    fill=object_id,
                    width=max(1, round(width * self.scale)),
                    joint="curve",
                )

    def line(
        self,
        points: Sequence[Point],
        fill: tuple[int, int, int],
        width: float,
        clip_id: int | None = None,
    ) -> None:
        """A polyline; with `clip_id`, only the part inside that object is drawn (wing veins)."""
        pts = [self.transform(p) for p in points]
        px = max(1, round(width * self.scale))
        if clip_id is None:
            self.draw.line(pts, fill=fill, width=px, joint="curve")
            return
        layer = Image.new("L", self.image.size, 0)
        ImageDraw.Draw(layer).line(pts, fill=255, width=px, joint="curve")
        inside = self.mask.point(lambda v: 255 if v == clip_id else 0)
        self.image.paste(
            Image.new("RGB", self.image.size, fill), (0, 0), ImageChops.multiply(layer, inside)
        )

    def finish(self) -> tuple:
        """Downsample to the final size: smooth RGB, nearest-neighbour mask."""
        size = (self.width // SUPERSAMPLE, self.height // SUPERSAMPLE)
        return (
            self.image.resize(size, Image.Resampling.LANCZOS),
            self.mask.resize(size, Image.Resampling.NEAREST),
        )


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0, n: int = 72
) -> list[Point]:
    """Polygon of a rotated ellipse."""
    a = math.radians(angle_deg)
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x, y = rx * math.cos(t), ry * math.sin(t)
        pts.append((cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)))
    return pts


def _mirror(points: Sequence[Point]) -> list[Point]:
    return [(-x, y) for x, y in points]


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _background(canvas: _Canvas, rng: random.Random, base: tuple[int, int, int]) -> None:
    """A soft vertical gradient, a specimen label and a scale bar, like a collection photo."""
    top = _jitter(base, rng, 4)
    bottom = tuple(max(0, c - rng.randint(10, 18)) for c in top)
    for y in range(canvas.height):
        f = y / max(1, canvas.height - 1)
        colour = tuple(round(t + (b - t) * f) for t, b in zip(top, bottom, strict=True))
        canvas.draw.line([(0, y), (canvas.width, y)], fill=colour)
    # Label card in a lower corner with a few "typed" lines.
    s = SUPERSAMPLE
    lw, lh = round(canvas.width * 0.22), round(canvas.height * 0.09)
    x0 = canvas.width - lw - 14 * s if rng.random() < 0.5 else 14 * s
    y0 = canvas.height - lh - 14 * s
    canvas.draw.rectangle(
        [x0, y0, x0 + lw, y0 + lh], fill=(250, 249, 240), outline=(170, 170, 160), width=s
    )
    for i in range(3):
        ly = y0 + (i + 1) * lh // 4
        canvas.draw.line(
            [x0 + 6 * s, ly, x0 + 6 * s + round(lw * rng.uniform(0.4, 0.85)), ly],
            fill=(60, 60, 70),
            width=s,
        )
    # Scale bar in the other lower corner.
    bx = 16 * s if x0 > canvas.width // 2 else canvas.width - 16 * s - round(canvas.width * 0.15)
    by = canvas.height - 22 * s
    canvas.draw.rectangle([bx, by, bx + round(canvas.width * 0.15), by + 4 * s], fill=(25, 25, 25))


def _shadow(canvas: _Canvas, points: Sequence[Point], blur: float) -> None:
    """A soft drop shadow under the specimen."""
    layer = Image.new("L", canvas.image.size, 0)
    pts = [canvas.transform(p) for p in points]
    ImageDraw.Draw(layer).polygon(
        [(x + 6 * SUPERSAMPLE, y + 8 * SUPERSAMPLE) for x, y in pts], fill=70
    )
    layer = layer.filter(ImageFilter.GaussianBlur(blur * canvas.scale))
    dark = Image.new("RGB", canvas.image.size, (40, 40, 40))
    canvas.image.paste(dark, (0, 0), layer)


def _draw_butterfly(canvas: _Canvas, rng: random.Random, ventral: bool) -> None:
    ids = GT_IDS["Danaus plexippus"]
    orange = _jitter((222, 118, 22) if not ventral else (226, 160, 82), rng, 10)
    black = (28, 22, 20)
    fore = _ellipse(-0.5, -0.2, 0.52 * rng.uniform(0.95, 1.05), 0.27, -22 + rng.uniform(-4, 4))
    hind = _ellipse(-0.36, 0.25, 0.34, 0.27 * rng.uniform(0.95, 1.08), 28 + rng.uniform(-4, 4))
    body = _ellipse(0.0, 0.06, 0.055, 0.4)
    head = _ellipse(0.0, -0.38, 0.075, 0.07)
    _shadow(canvas, fore + _mirror(fore) + hind + _mirror(hind), blur=0.05)
    for wing in (hind, _mirror(hind), fore, _mirror(fore)):
        canvas.polygon(wing, fill=orange, outline=black, width=0.045, object_id=ids["wings"])
    # Veins: dark lines from the wing base towards the margin.
    for sign in (-1, 1):
        for tx, ty in ((-0.95, -0.42), (-0.85, -0.15), (-0.62, 0.0), (-0.6, 0.35), (-0.4, 0.48)):
            canvas.line(
                [(sign * 0.05, -0.05), (sign * tx, ty)],
                fill=black,
                width=0.014,
                clip_id=ids["wings"],
            )
        # White spots along the dark outer margin.
        spots = _ellipse(sign * -0.5, -0.2, 0.47, 0.22, sign * -22, n=14)[3:10]
        for sx, sy in spots:
            canvas.polygon(_ellipse(sx, sy, 0.018, 0.018, n=12), fill=(245, 245, 240))
    for sign in (-1, 1):
        tip = (sign * rng.uniform(0.22, 0.3), -0.85)
        canvas.line([(sign * 0.02, -0.42), tip], fill=black, width=0.012)
        canvas.polygon(_ellipse(tip[0], tip[1], 0.022, 0.03, n=16), fill=black)
    canvas.polygon(body, fill=(40, 32, 30), object_id=ids["body"])
    canvas.polygon(head, fill=(35, 28, 26), object_id=ids["body"])


def _draw_beetle(canvas: _Canvas, rng: random.Random) -> None:
    ids = GT_IDS["Carabus auratus"]
    green = _jitter((44, 132, 58), rng, 12)
    dark = (24, 30, 22)
    elytra = _ellipse(0.0, 0.22, 0.32 * rng.uniform(0.95, 1.05), 0.46)
    pronotum = _ellipse(0.0, -0.33, 0.25, 0.13 * rng.uniform(0.95, 1.1))
    head = _ellipse(0.0, -0.51, 0.12, 0.09)
    _shadow(canvas, elytra + pronotum, blur=0.05)
    # Legs and antennae first, so the body covers their roots.
    for sign in (-1, 1):
        for base_y, dy in ((-0.3, -0.25), (0.0, 0.05), (0.22, 0.3)):
            knee = (sign * 0.5, base_y + dy * 0.5 + rng.uniform(-0.04, 0.04))
            foot = (sign * 0.62, base_y + dy + rng.uniform(-0.05, 0.05))
            canvas.line([(sign * 0.15, base_y), knee, foot], fill=dark, width=0.03)
        canvas.line(
            [(sign * 0.07, -0.58), (sign * 0.2, -0.75), (sign * rng.uniform(0.3, 0.38), -0.95)],
            fill=dark,
            width=0.02,
        )
    canvas.polygon(elytra, fill=green, outline=(20, 70, 30), width=0.02, object_id=ids["elytra"])
    # Metallic sheen and longitudinal striae on the elytra.
    canvas.polygon(_ellipse(-0.1, 0.1, 0.09, 0.3, 8), fill=tuple(min(255, c + 45) for c in green))
    canvas.polygon(_ellipse(0.1, 0.1, 0.09, 0.3, -8), fill=tuple(min(255, c + 30) for c in green))
    for x in (-0.2, -0.1, 0.1, 0.2):
        canvas.line(
            [(x, -0.12), (x * 0.8, 0.55)], fill=tuple(max(0, c - 30) for c in green), width=0.008
        )
    canvas.line([(0.0, -0.22), (0.0, 0.67)], fill=dark, width=0.012)
    canvas.polygon(
        pronotum,
        fill=tuple(max(0, c - 12) for c in green),
        outline=(20, 70, 30),
        width=0.015,
        object_id=ids["pronotum"],
    )
    canvas.polygon(head, fill=(30, 70, 36), object_id=ids["head"])
    for sign in (-1, 1):  # mandibles
        canvas.polygon(
            [(sign * 0.03, -0.58), (sign * 0.09, -0.58), (sign * 0.02, -0.66)], fill=dark
        )


def render_sample(item: SampleImage) -> tuple:
    """(RGB image, ID mask), both at the displayed size, for one sample row."""
    rng = random.Random(item.seed)
    width, height = item.size
    background = rng.choice([(238, 236, 228), (232, 235, 238), (242, 240, 233), (230, 232, 226)])
    canvas = _Canvas(item.size, background)
    _background(canvas, rng, background)
    if item.species == "Danaus plexippus":
        centre = (width * rng.uniform(0.46, 0.54), height * rng.uniform(0.5, 0.56))
        canvas.place(
            centre,
            scale=min(width, height) * rng.uniform(0.36, 0.42),
            angle_deg=rng.uniform(-12, 12),
        )
        _draw_butterfly(canvas, rng, ventral=item.view == "ventral")
    else:
        centre = (width * rng.uniform(0.46, 0.54), height * rng.uniform(0.44, 0.5))
        canvas.place(
            centre,
            scale=min(width, height) * rng.uniform(0.4, 0.46),
            angle_deg=rng.uniform(-15, 15),
        )
        _draw_beetle(canvas, rng)
    return canvas.finish()


def _stored_pixels(image, orientation: int):
    """Pixels as a camera would store them so that `orientation` displays them as `image`."""
    # EXIF 6 = "rotate 90 degrees clockwise to display", so the camera stored it rotated back.
    inverse = {
        1: None,
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    method = inverse[orientation]
    return image if method is None else image.transpose(method)


def generate(out_dir: str | Path) -> list[Path]:
    """Write the sample images, ground-truth masks and CSV into `out_dir`; return the files written."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for item in SAMPLE_IMAGES:
        image, mask = render_sample(item)
        stored = _stored_pixels(image, item.orientation)
        exif = Image.Exif()
        if item.orientation != 1:
            exif[0x0112] = item.orientation
        buf = io.BytesIO()
        stored.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True, exif=exif.tobytes())
        path = out_dir / IMAGES_DIR / item.dataset / f"{item.name}.jpg"
        fileio.atomic_write_bytes(path, buf.getvalue())
        written.append(path)
        written.append(write_mask(out_dir / GT_MASKS_DIR / f"{item.name}.png", np.asarray(mask)))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in SAMPLE_IMAGES:
        writer.writerow([item.name, item.dataset, item.species, item.view, item.catalogue_no])
    csv_path = out_dir / CSV_NAME
    fileio.atomic_write_text(csv_path, text.getvalue())
    written.append(csv_path)
    for path in written:
        path.chmod(0o644)  # temp files are created private; shipped data must be world-readable
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sst_desktop.data.sample",
        description="Regenerate the SST Desktop sample dataset.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "sample_data",
        help="output folder (default: the package's sample_data folder)",
    )
    args = parser.parse_args(argv)
    files = generate(args.out)
    total = sum(f.stat().st_size for f in files)
    print(f"Wrote {len(files)} files ({total / 1024:.0f} KiB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
