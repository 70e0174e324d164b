"""Tests for --export: COCO decodes back pixel-equal, YOLO polygons cover each part, CSV and
segmentation-folder contents."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from _run_helpers import image_path, make_project, run_cli
from PIL import Image
from pycocotools import mask as mask_utils

from sst_desktop.data import images
from sst_desktop.data.masks import read_mask, write_mask
from sst_desktop.data.project import Project
from sst_desktop.export import export_project
from sst_desktop.export.segfolder import shortest_side_size
from sst_desktop.fileio import atomic_write_json

LABELS = {"1": "left wing", "2": "body"}


def shapes(width: int, height: int, seed: int) -> np.ndarray:
    """A part with a hole (ID 1), a part in two pieces (ID 2) and a speck of ID 2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width * rng.uniform(0.3, 0.4), height * rng.uniform(0.35, 0.5)
    r = min(width, height) * 0.25
    dist = np.hypot(xx - cx, yy - cy)
    mask = np.zeros((height, width), np.uint8)
    mask[(dist <= r) & (dist > r * 0.45)] = 1
    mask[int(height * 0.1) : int(height * 0.25), int(width * 0.7) : int(width * 0.9)] = 2
    mask[int(height * 0.7) : int(height * 0.9), int(width * 0.65) : int(width * 0.95)] = 2
    return mask


@pytest.fixture()
def project(tmp_path):
    spec_path = make_project(tmp_path, tmp_path / "none.pt")
    data = json.loads(spec_path.read_text())
    data["labels"] = LABELS
    spec_path.write_text(json.dumps(data))
    # a2 (56x80) is stored sideways with EXIF orientation 6: masks and exports use the upright size.
    a2 = image_path(spec_path, "a2")
    stored = Image.open(a2).convert("RGB").rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(a2, exif=exif.tobytes())
    root = spec_path.parent
    project = Project.open(spec_path)
    for frame in project.frames():
        if frame.pk == "a0":
            continue
        width, height = images.image_size(frame.image_path)
        write_mask(
            root / "pred_masks" / f"{frame.pk}.png", shapes(width, height, seed=len(frame.pk))
        )
    # An empty prediction and a flagged one, as a run would have recorded them.
    write_mask(root / "pred_masks" / "b1.png", np.zeros((64, 48), np.uint8))
    atomic_write_json(
        root / "runs" / "20260101T000000.000000Z.json",
        {"written_pks": ["b1", "a2"], "flagged": [{"pk": "b1", "reasons": ["empty"]}]},
    )
    return project


def mask_of(project, pk):
    frame = project.frame(pk)
    folder = "ref_masks" if pk == "a0" else "pred_masks"
    return read_mask(
        project.root / folder / f"{pk}.png", expected_size=images.image_size(frame.image_path)
    )


def test_coco_annotations_decode_back_pixel_equal(project, tmp_path):
    out = tmp_path / "coco.json"
    result = export_project(project, "coco", out)
    data = json.loads(out.read_text())
    assert result.images == len(data["images"]) == 7
    assert {c["id"]: c["name"] for c in data["categories"]} == {1: "left wing", 2: "body"}
    by_id = {img["id"]: img for img in data["images"]}
    assert by_id[1]["file_name"] == "a0.png" and by_id[1]["sst_mask"] == "ref"
    assert {img["sst_mask"] for img in data["images"][1:]} == {"pred"}
    a2 = next(img for img in data["images"] if img["sst_pk"] == "a2")
    assert (a2["width"], a2["height"]) == (56, 80)
    assert Image.open(project.frame("a2").image_path).size == (80, 56)
    seen = {}
    for ann in data["annotations"]:
        img = by_id[ann["image_id"]]
        mask = mask_of(project, img["sst_pk"])
        decoded = mask_utils.decode(ann["segmentation"])
        truth = mask == ann["category_id"]
        assert decoded.shape == truth.shape and np.array_equal(decoded.astype(bool), truth)
        ys, xs = np.nonzero(truth)
        assert ann["area"] == xs.size
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        seen.setdefault(img["sst_pk"], set()).add(ann["category_id"])
    # Every part of every mask has its annotation (b1 is empty: an image with none).
    for img in data["images"]:
        ids = {int(v) for v in np.unique(mask_of(project, img["sst_pk"]))} - {0}
        assert seen.get(img["sst_pk"], set()) == ids


def test_yolo_polygons_cover_each_part(project, tmp_path):
    out = tmp_path / "yolo"
    result = export_project(project, "yolo", out, masks="pred")
    assert result.images == 6
    yaml = (out / "data.yaml").read_text()
    assert '0: "left wing"' in yaml and '1: "body"' in yaml and "train: images" in yaml
    checked = 0
    for pk in ("a1", "a2", "a3", "a4", "b0"):
        mask = mask_of(project, pk)
        height, width = mask.shape
        assert (out / "images" / f"{pk}.png").is_file()
        raster = {1: np.zeros_like(mask), 2: np.zeros_like(mask)}
        regions = {1: 0, 2: 0}
        for line in (out / "labels" / f"{pk}.txt").read_text().splitlines():
            values = line.split()
            part = int(values[0]) + 1
            xy = np.array(values[1:], float).reshape(-1, 2) * [width, height]
            assert ((xy >= 0) & (xy <= [width, height])).all()
            cv2.fillPoly(raster[part], [np.round(xy).astype(np.int32)], 1)
            regions[part] += 1
        for part in (1, 2):
            truth = mask == part
            got = raster[part].astype(bool)
            iou = (truth & got).sum() / (truth | got).sum()
            assert iou >= 0.9, (pk, part, iou)
            checked += 1
        # One polygon per connected region; the ring's hole stays empty.
        assert regions == {1: 1, 2: 2}
        ys, xs = np.nonzero(mask == 1)
        hole_y, hole_x = int(round(ys.mean())), int(round(xs.mean()))
        assert mask[hole_y, hole_x] == 0 and raster[1][hole_y, hole_x] == 0
    assert checked == 10
    assert (out / "labels" / "b1.txt").read_text().strip() == ""


def test_csv_rows_per_image_and_part(project, tmp_path):
    out = tmp_path / "parts.csv"
    export_project(project, "csv", out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    a2 = [r for r in rows if r["pk"] == "a2"]
    mask = mask_of(project, "a2")
    assert [r["part_name"] for r in a2] == ["left wing", "body"]
    for row in a2:
        ys, xs = np.nonzero(mask == int(row["part_id"]))
        assert int(row["area_px"]) == xs.size
        assert (int(row["bbox_x"]), int(row["bbox_y"])) == (xs.min(), ys.min())
        assert int(row["bbox_w"]) == xs.max() - xs.min() + 1
        assert float(row["centroid_x"]) == pytest.approx(xs.mean(), abs=1e-3)
        assert float(row["centroid_y"]) == pytest.approx(ys.mean(), abs=1e-3)
        assert row["mask"] == "pred" and row["flags"] == ""
    b1 = [r for r in rows if r["pk"] == "b1"]
    assert len(b1) == 1 and b1[0]["part_id"] == "" and b1[0]["flags"] == "empty"
    assert {r["mask"] for r in rows if r["pk"] == "a0"} == {"ref"}


def test_segfolder_layout_sizes_and_labels(project, tmp_path):
    out = tmp_path / "seg"
    progress = []
    result = export_project(
        project, "segfolder", out, shortest_side=32, on_progress=lambda d, t: progress.append(d)
    )
    assert result.images == 7 and progress[-1] == 7
    for pk in ("a0", "a2", "b0"):
        size = images.image_size(project.frame(pk).image_path)
        img = Image.open(out / "images" / "training" / f"{pk}.jpg")
        ann = read_mask(out / "annotations" / "training" / f"{pk}.png")
        assert img.size == shortest_side_size(size, 32) == (ann.shape[1], ann.shape[0])
        assert min(img.size) == 32
        assert set(np.unique(ann)) <= set(np.unique(mask_of(project, pk)))
    # The EXIF-rotated image comes out upright (portrait, like its mask).
    a2 = Image.open(out / "images" / "training" / "a2.jpg")
    assert a2.size == (32, 45) and not a2.getexif().get(0x0112)
    with open(out / "labels.csv", newline="") as f:
        rows = {r["stem"]: r for r in csv.DictReader(f)}
    assert rows["a2"]["parts"] == "1 left wing, 2 body" and rows["a2"]["set"] == "a"
    assert rows["a0"]["mask"] == "ref"


def test_every_format_counts_the_same_objects_and_reports_stale_predictions(project, tmp_path):
    import os

    # a1 and a3 were predicted before the group's reference a0 was last saved: stale, as the
    # app counts them. Group b has no reference, so its predictions are never stale.
    ref_time = (project.root / "ref_masks" / "a0.png").stat().st_mtime_ns
    for pk in ("a1", "a3"):
        earlier = ref_time - 60 * 10**9
        os.utime(project.root / "pred_masks" / f"{pk}.png", ns=(earlier, earlier))
    pks = [f.pk for f in project.frames()]
    parts = {pk: {int(v) for v in np.unique(mask_of(project, pk))} - {0} for pk in pks}
    expected = sum(len(ids) for ids in parts.values())
    assert expected == 12  # a0's reference has 2 parts, a1-a4 and b0 2 each, b1 none

    outs = {
        "coco": tmp_path / "c.json",
        "yolo": tmp_path / "yolo",
        "csv": tmp_path / "t.csv",
        "segfolder": tmp_path / "seg",
    }
    results = {fmt: export_project(project, fmt, out) for fmt, out in outs.items()}
    for fmt, result in results.items():
        assert (result.images, result.objects, result.stale) == (7, expected, ["a1", "a3"]), fmt
        line = result.lines()[-1]
        assert line.startswith(
            f"Exported 7 image(s), {expected} object(s) (one per image and part)"
        )
        assert "; 2 of the images are stale predictions" in line, fmt
        assert result.to_dict()["stale"] == ["a1", "a3"]

    # The files hold those objects and say which images are stale.
    coco = json.loads(outs["coco"].read_text())
    assert len(coco["annotations"]) == expected
    assert {img["sst_pk"] for img in coco["images"] if img["sst_stale"]} == {"a1", "a3"}
    with open(outs["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r["part_id"]) == expected
    assert {r["pk"] for r in rows if r["stale"] == "yes"} == {"a1", "a3"}
    assert {r["stale"] for r in rows if r["pk"] not in ("a1", "a3")} == {""}
    with open(outs["segfolder"] / "labels.csv", newline="") as f:
        seg = {r["pk"]: r["stale"] for r in csv.DictReader(f)}
    assert {pk for pk, v in seg.items() if v == "yes"} == {"a1", "a3"}
    lines = {pk: (outs["yolo"] / "labels" / f"{pk}.txt").read_text().splitlines() for pk in pks}
    assert sum(len({line.split()[0] for line in text}) for text in lines.values()) == expected
    # YOLO needs more polygons than objects (ID 2 has two pieces), and says so separately.
    polygons = sum(len(text) for text in lines.values())
    assert results["yolo"].polygons == polygons > expected
    yaml = (outs["yolo"] / "data.yaml").read_text()
    assert "#   stale prediction: a1\n#   stale prediction: a3\n" in yaml
    assert (
        f"{expected} object(s) (one per image and part) in {polygons} polygon(s)"
        in (results["yolo"].lines()[-1])
    )
    assert (
        "stale" not in export_project(project, "coco", tmp_path / "r.json", masks="ref").lines()[-1]
    )


def test_cli_export_and_usage_errors(project, tmp_path):
    spec = str(project.spec_path)
    proc = run_cli("--export", spec, "--format", "coco", "--out", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("Exported 7 image(s)")
    proc = run_cli("--export", spec, "--out", str(tmp_path / "c.json"))
    assert proc.returncode == 2 and "--format" in proc.stderr
    proc = run_cli("--export", spec, "--format", "coco", "--out", str(tmp_path))
    assert proc.returncode == 2 and "is a folder" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--gt", "d"], "--gt needs --evaluate"),
        (["--evaluate", "s.json", "--seeds", "2"], "--seeds needs --sweep"),
        (["--evaluate", "s.json", "--masks", "all"], "--masks pred or --masks ref"),
        (["--evaluate", "s.json", "--sweep", "0"], "must be 1 or more"),
        (["--export", "s.json", "--format", "coco"], "--out PATH"),
        (["--format", "coco"], "need --export"),
        (
            ["--export", "s.json", "--format", "coco", "--out", "x", "--shortest-side", "9"],
            "segfolder",
        ),
        (["--masks", "ref"], "--masks needs"),
        (["--evaluate", "s.json", "--export", "s.json"], "not allowed with"),
    ],
)
def test_quality_usage_errors_exit_2(argv, needle, capsys):
    from sst_desktop.cli import main

    assert main(argv) == 2
    assert needle in capsys.readouterr().err
