"""Shared helpers for the app backend tests: a tiny generated dataset and a running server."""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Two groups ("beetle", "moth") of three images each; the first moth photo carries an EXIF
# rotation tag (stored landscape, shown portrait).
SPECIES = ("beetle", "moth")
IMAGES_PER_GROUP = 3
WIDTH, HEIGHT = 96, 64


def make_dataset(folder: Path) -> Path:
    """Write small specimen-like JPEGs and a CSV (pk, species, file) under `folder`; return the CSV."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    rng = np.random.default_rng(0)
    for g, species in enumerate(SPECIES):
        for i in range(IMAGES_PER_GROUP):
            pk = f"{species}-{i}"
            arr = np.full((HEIGHT, WIDTH, 3), 235, dtype=np.uint8)
            arr += rng.integers(0, 12, size=arr.shape, dtype=np.uint8)
            # A dark "specimen" blob whose position shifts a little per image.
            y0, x0 = 16 + i * 2, 24 + g * 8 + i * 3
            arr[y0 : y0 + 30, x0 : x0 + 40] = (60 + 40 * g, 40, 30)
            image = Image.fromarray(arr)
            name = f"{pk}.jpg"
            exif = None
            if species == "moth" and i == 0:
                exif = Image.Exif()
                exif[0x0112] = 6  # rotate 90° clockwise to display
            image.save(images / name, quality=95, **({"exif": exif} if exif else {}))
            rows.append({"pk": pk, "species": species, "file": f"images/{name}"})
    csv_path = folder / "specimens.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["pk", "species", "file"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def project_config(csv_path: Path, folder: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """The new-project form's config for the generated dataset (random-weight tiny model, 256 px)."""
    config = {
        "name": "Tiny specimens",
        "csv": str(csv_path),
        "primary_key": "pk",
        "img_path": "file",
        "image_root": "",
        "group_by": ["species"],
        "sam2": "sam2.1_hiera_tiny",
        "mask_mode": "original",
        "device": "cpu",
        "image_size": 256,
        "folder": str(folder) if folder else "",
    }
    config.update(overrides)
    return config


def http(
    url: str, data: Any = None, method: str | None = None, headers: dict | None = None
) -> tuple[int, bytes, Any]:
    """(status, body, headers) of a request; HTTP errors are returned, not raised."""
    body = None
    hdrs = dict(headers or {})
    if data is not None:
        body = json.dumps(data).encode() if not isinstance(data, bytes) else data
        hdrs.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def call_api(base: str, token: str, name: str, *args: Any) -> dict[str, Any]:
    """POST /api/<name> with the token; the decoded JSON reply."""
    status, body, _ = http(f"{base}/api/{name}?token={token}", {"args": list(args)}, "POST")
    payload = json.loads(body)
    payload["_status"] = status
    return payload
