"""Benchmark: a whole `sst-desktop --infer` run on real-sized photos, against the previous run
pipeline and upstream SAM2, all on the same files in the same invocation.

It generates N JPEG photos (default 4000x3000, every third one stored sideways with an EXIF
orientation), one labelled reference with two objects, and a project around them, then measures:

  new         `sst-desktop --infer` of this tree (exact decode, the default)
  fast        the same with --fast-decode (and its mask agreement with `new`, in % of pixels)
  previous    `sst-desktop --infer` of the tree at --baseline-rev (the pipeline before the staged
              one), as a subprocess with that tree on PYTHONPATH
  video       upstream SAM2VideoPredictor on the whole group [ref, t1, ..., tN] from a JPEG folder
              (a different, order-dependent definition), masks written as PNGs; --video-max
              limits N
  per-target  upstream's pseudo-video [ref, t] per target (the SST definition as the original
              SST-GUI runs it), timed on --per-target-max targets

  stages      CPU time per photo of the work outside the model (read, post-process, write), one
              thread, this tree against --baseline-rev's functions on the same photos and the same
              synthetic two-object logits; the steadiest measure on a busy machine

CLI runs are timed with two runs each (--max-frames K, then all N) so that start-up, model load
and the reference are subtracted: per image = (full - short) / (N - K). CPU time is user + system
of the child process (all threads); on a shared machine it is steadier than wall time.

  python benchmarks/bench_end_to_end.py --n 12 --image-size 256 --device cpu
  python benchmarks/bench_end_to_end.py --n 300 --batch-size 16 --device cuda --variant sam2.1_hiera_large
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# The last commit before the staged pipeline: its `--infer` is the "previous" baseline.
DEFAULT_BASELINE_REV = "fe8ec8e"
APPROACHES = ("stages", "new", "fast", "previous", "video", "per-target")


# --------------------------------------------------------------------------- data


def photo(index: int, width: int, height: int) -> np.ndarray:
    """A deterministic 'specimen photo': smooth background, two coloured blobs, sensor noise."""
    from PIL import Image

    rng = np.random.default_rng(100 + index)
    small = rng.integers(120, 240, size=(6, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
    img = img.copy()
    yy, xx = np.ogrid[:height, :width]
    for (cx, cy), colour in (((0.35, 0.42), (150, 60, 30)), ((0.66, 0.6), (40, 90, 160))):
        cx, cy = cx + rng.uniform(-0.03, 0.03), cy + rng.uniform(-0.03, 0.03)
        blob = ((xx - cx * width) / (0.17 * width)) ** 2 + (
            (yy - cy * height) / (0.2 * height)
        ) ** 2
        img[blob <= 1] = colour
    noise = rng.integers(-8, 9, size=img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def reference_mask(width: int, height: int) -> np.ndarray:
    """IDs 1 and 2 over the two blobs of `photo(0, ...)` (approximately: it is a benchmark)."""
    yy, xx = np.ogrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    for oid, (cx, cy) in ((1, (0.35, 0.42)), (2, (0.66, 0.6))):
        mask[
            ((xx - cx * width) / (0.17 * width)) ** 2 + ((yy - cy * height) / (0.2 * height)) ** 2
            <= 1
        ] = oid
    return mask


def make_dataset(folder: Path, n: int, width: int, height: int, checkpoint: Path, args) -> Path:
    """Photos, CSV, spec.json and the reference mask; returns the spec path."""
    from PIL import Image

    from sst_desktop.data.masks import write_mask

    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for index in range(n + 1):  # index 0 is the reference
        name = f"p{index:04d}.jpg"
        pixels = photo(index, width, height)
        exif = Image.Exif()
        if index % 3 == 2:
            # Stored sideways; orientation 6 shows it upright at width x height.
            pixels = np.ascontiguousarray(np.rot90(pixels, k=1))
            exif[0x0112] = 6
        Image.fromarray(pixels).save(images / name, quality=90, exif=exif.tobytes())
        rows.append({"id": f"p{index:04d}", "group": "g", "file": name})
    root = folder / "project"
    root.mkdir()
    with open(root / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "group", "file"])
        writer.writeheader()
        writer.writerows(rows)
    write_mask(root / "ref_masks" / "p0000.png", reference_mask(width, height))
    spec = {
        "version": 1,
        "name": "bench",
        "root": str(root),
        "csv": str(root / "images.csv"),
        "primary_key": "id",
        "img_path": "file",
        "image_root": str(images),
        "group_by": ["group"],
        "sam2": args.variant,
        "checkpoint": str(checkpoint),
        "device": args.device,
        "image_size": args.image_size,
        "mask_mode": "original",
    }
    (root / "spec.json").write_text(json.dumps(spec, indent=2))
    return root / "spec.json"


def export_tree(rev: str, dest: Path) -> Path:
    """The package as it was at `rev` (git archive), to run the previous pipeline from."""
    archive = dest / "tree.tar"
    with open(archive, "wb") as f:
        subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "sst_desktop"], stdout=f, check=True
        )
    tree = dest / "tree"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


# --------------------------------------------------------------------------- CLI runs


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(spec: Path, code_root: Path, extra: list[str], args) -> dict:
    """One `--infer --overwrite` run in a fresh process: wall and CPU seconds of the child."""
    env = dict(os.environ, PYTHONPATH=str(code_root), TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "sst_desktop", "--infer", str(spec), "--overwrite", "--quiet"]
    cmd += ["--batch-size", str(args.batch_size), "--device", args.device, *extra]
    cpu, wall = child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, child_cpu() - cpu
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "stdout": out.stdout}


def measure_cli(name: str, spec: Path, code_root: Path, extra: list[str], n: int, args) -> dict:
    """Per-image wall/CPU from a short and a full run (start-up and model load cancel out)."""
    short = run_cli(spec, code_root, [*extra, "--max-frames", str(args.short)], args)
    full = run_cli(spec, code_root, extra, args)
    images = n - args.short
    wall = full["wall_s"] - short["wall_s"]
    row = {
        "approach": name,
        "timed_targets": images,
        # A busy machine can make the difference meaningless: then it is left out (NaN).
        "images_per_s": images / wall if wall > 0 else float("nan"),
        "cpu_s_per_image": (full["cpu_s"] - short["cpu_s"]) / images,
        "full_run_wall_s": full["wall_s"],
    }
    runs = sorted((spec.parent / "runs").glob("*.json"))
    summary = json.loads(runs[-1].read_text())
    if summary.get("timings"):
        row["timings"] = summary["timings"]
    return row


def agreement(spec: Path, reference: dict[str, np.ndarray]) -> float:
    """Smallest per-image fraction of pixels equal to `reference` among the written masks."""
    from sst_desktop.data.masks import read_mask

    pred = spec.parent / "pred_masks"
    return min(
        float((read_mask(pred / f"{pk}.png") == mask).mean()) for pk, mask in reference.items()
    )


def read_preds(spec: Path) -> dict[str, np.ndarray]:
    from sst_desktop.data.masks import read_mask

    return {p.stem: read_mask(p) for p in sorted((spec.parent / "pred_masks").glob("*.png"))}


# --------------------------------------------------------------------------- stages outside the model


def stage_worker(cfg: dict) -> dict:
    """CPU ms per photo of read / post-process / write, one thread, for the "new" or "previous"
    code on PYTHONPATH (the model itself is left out: both run the same one)."""
    import torch
    import torch.nn.functional as F

    from sst_desktop.data.images import load_image_array
    from sst_desktop.engine import postprocess, propagation

    torch.set_num_threads(1)
    new = cfg["which"] == "new"
    if new:
        from sst_desktop.data.images import load_model_input
        from sst_desktop.data.masks import id_counts, stage_prediction
        from sst_desktop.data.review import review_counts
        from sst_desktop.run.pipeline import pillow_block_cache

        # As a run does, for the whole process (kept referenced: a dropped generator-based
        # context manager would be closed, and its settings restored, at once).
        block_cache = pillow_block_cache(8)
        block_cache.__enter__()
    else:
        from sst_desktop.data.masks import write_mask
        from sst_desktop.data.review import review_mask
    size = cfg["image_size"]
    low = max(size // 4, 1)
    yy, xx = torch.meshgrid(torch.arange(low), torch.arange(low), indexing="ij")
    # Two smooth blobs as low-res logits: a mask like a real prediction (two objects).
    blobs = [(0.4, 0.35, 0.2), (0.6, 0.66, 0.16)]
    logits_low = torch.stack(
        [
            3 * (1 - ((yy - cy * low) ** 2 + (xx - cx * low) ** 2) / (r * low) ** 2)
            for cy, cx, r in blobs
        ]
    )[:, None].float()
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    totals = {"read": 0.0, "post": 0.0, "write": 0.0}
    photos = [Path(p) for p in cfg["photos"]]

    def one_pass(path: Path) -> dict[str, float]:
        """CPU seconds of each stage for one photo."""
        t0 = time.process_time()
        if new:
            model_input = load_model_input(path, size)
            propagation._normalised(model_input.resized)
            height, width = model_input.height, model_input.width
        else:
            array = load_image_array(path)
            propagation.preprocess_image(array, size)
            height, width = array.shape[:2]
        t1 = time.process_time()
        if new:  # the run's own post-processing of one target
            prep = postprocess.PreparedTarget(path.stem, height, width)
            result = postprocess.finish(prep, logits_low, [0.0, 0.0], [1, 2], False)
            mask = result.mask
        else:
            with torch.inference_mode():
                logits = F.interpolate(
                    logits_low, size=(height, width), mode="bilinear", align_corners=False
                )[:, 0]
                mask = propagation.compose_id_mask(logits, [1, 2])
        t2 = time.process_time()
        target = out / f"{path.stem}.png"
        if new:
            counts = result.id_counts if result.id_counts is not None else id_counts(mask)
            review_counts(counts, {1, 2})
            stage_prediction(target, mask).commit()
        else:
            write_mask(target, mask)
            review_mask(mask, {1, 2})
        t3 = time.process_time()
        return {"read": t1 - t0, "post": t2 - t1, "write": t3 - t2}

    one_pass(photos[0])  # warm-up
    for path in photos:
        # The least of a few passes: the photo's cost with the least interference from the
        # machine's other work (the same for both codes).
        passes = [one_pass(path) for _ in range(cfg["repeats"])]
        for stage in totals:
            totals[stage] += min(p[stage] for p in passes)
    n = len(photos)
    row = {k: 1000 * v / n for k, v in totals.items()}
    row["total"] = sum(row.values())
    row["png_kib"] = sum(p.stat().st_size for p in out.glob("*.png")) / 1024 / n
    return row


def measure_stages(spec: Path, tree: Path, args, tmp: Path) -> dict:
    photos = sorted((spec.parent.parent / "images").glob("*.jpg"))[1:]
    rows = {}
    for which, root in (("new", REPO), ("previous", tree)):
        cfg = {
            "which": which,
            "photos": [str(p) for p in photos],
            "image_size": args.image_size,
            "out": str(tmp / f"stages-{which}"),
            "repeats": args.stage_repeats,
        }
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONWARNINGS="ignore")
        out = subprocess.run(
            [sys.executable, __file__, "--stage-worker", json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"stages {which} failed:\n{out.stderr[-2000:]}")
        rows[which] = json.loads(out.stdout.strip().splitlines()[-1])
    return rows


# --------------------------------------------------------------------------- upstream


def upstream_worker(cfg: dict) -> dict:
    """Upstream's video predictor on JPEG folders (its own loader), masks written as PNGs."""
    import torch
    from PIL import Image

    from sst_desktop.data.masks import read_mask
    from sst_desktop.engine.propagation import compose_id_mask
    from sst_desktop.engine.sam2_model import get_model

    handle = get_model(
        cfg["variant"],
        device=cfg["device"],
        checkpoint=cfg["checkpoint"],
        image_size=cfg["image_size"],
    )
    images = sorted(Path(cfg["images"]).glob("*.jpg"))
    ref, targets = images[0], images[1:]
    # Upstream is slow on a CPU: time it on the first targets (the same files as ours).
    limit = cfg["per_target_max"] if cfg["approach"] == "per-target" else cfg["video_max"]
    targets = targets[:limit] if limit else targets
    ref_mask = read_mask(cfg["ref_mask"])
    obj_ids = sorted(set(np.unique(ref_mask).tolist()) - {0})
    out_dir = Path(cfg["out"])
    out_dir.mkdir(parents=True, exist_ok=True)
    model = handle.model

    def video(frames: list[Path], names: list[str]) -> None:
        folder = Path(tempfile.mkdtemp(dir=cfg["out"]))
        for i, frame in enumerate(frames):  # upstream reads <int>.jpg frames from a folder
            os.symlink(frame, folder / f"{i:05d}.jpg")
        with handle.lock, torch.inference_mode(), handle.autocast():
            state = model.init_state(video_path=str(folder))
            for oid in obj_ids:
                model.add_new_mask(state, frame_idx=0, obj_id=oid, mask=ref_mask == oid)
            for frame_idx, _, video_res_masks in model.propagate_in_video(state):
                if frame_idx == 0:
                    continue
                ids = compose_id_mask(video_res_masks[:, 0], obj_ids)
                Image.fromarray(ids).save(out_dir / f"{names[frame_idx - 1]}.png")

    cuda = handle.device.type == "cuda"
    video([ref, targets[0]], [targets[0].stem])  # warm-up
    if cuda:
        torch.cuda.synchronize()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = usage.ru_utime + usage.ru_stime, time.perf_counter()
    if cfg["approach"] == "video":
        video([ref, *targets], [t.stem for t in targets])
    else:
        for target in targets:
            video([ref, target], [target.stem])
    if cuda:
        torch.cuda.synchronize()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall, cpu = time.perf_counter() - wall, usage.ru_utime + usage.ru_stime - cpu
    return {
        "approach": cfg["approach"],
        "timed_targets": len(targets),
        "images_per_s": len(targets) / wall,
        "cpu_s_per_image": cpu / len(targets),
    }


def measure_upstream(approach: str, spec: Path, checkpoint: Path, args, tmp: Path) -> dict:
    root = spec.parent
    cfg = {
        "approach": approach,
        "variant": args.variant,
        "device": args.device,
        "checkpoint": str(checkpoint),
        "image_size": args.image_size,
        "images": str(root.parent / "images"),
        "ref_mask": str(root / "ref_masks" / "p0000.png"),
        "out": str(tmp / f"upstream-{approach}"),
        "per_target_max": args.per_target_max,
        "video_max": args.video_max,
    }
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"upstream {approach} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver


def stage_table(timings: dict) -> list[str]:
    from sst_desktop.run.pipeline import format_timings

    return format_timings(timings)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=12, help="target photos (default 12)")
    p.add_argument("--size", default="4000x3000", help="photo size WxH (default 4000x3000)")
    p.add_argument("--approaches", nargs="+", choices=APPROACHES, default=list(APPROACHES))
    p.add_argument("--variant", default="sam2.1_hiera_tiny")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, mps")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: random weights)")
    p.add_argument("--image-size", type=int, default=256, help="model input size (default 256)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--short", type=int, default=2, help="targets of the short run (default 2)")
    p.add_argument(
        "--stage-repeats",
        type=int,
        default=3,
        help="passes per photo in `stages`; each stage's least is kept (default 3)",
    )
    p.add_argument(
        "--per-target-max", type=int, default=4, help="targets timed for per-target (default 4)"
    )
    p.add_argument(
        "--video-max", type=int, default=0, help="targets in the upstream video (default 0: all)"
    )
    p.add_argument(
        "--baseline-rev", default=DEFAULT_BASELINE_REV, help="git revision of 'previous'"
    )
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stage-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(upstream_worker(json.loads(args.worker))))
        return 0
    if args.stage_worker:
        print(json.dumps(stage_worker(json.loads(args.stage_worker))))
        return 0
    from bench_propagation import random_checkpoint

    width, height = (int(v) for v in args.size.lower().split("x"))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = (
            Path(args.checkpoint)
            if args.checkpoint
            else random_checkpoint(args.variant, args.image_size, tmp)
        )
        spec = make_dataset(tmp / "data", args.n, width, height, checkpoint, args)
        print(
            f"{args.n} photos of {width}x{height} JPEG (every third EXIF-rotated), "
            f"{args.variant} at {args.image_size} px, batch {args.batch_size}, device {args.device}, "
            f"{os.cpu_count()} CPU(s)",
            flush=True,
        )
        if "stages" not in args.approaches:
            print(f"{'approach':>11} {'timed':>6} {'img/s':>7} {'CPU s/img':>9}", flush=True)

        def show(row: dict) -> None:
            rows.append(row)
            extra = f"  agreement {100 * row['agreement']:.2f} %" if "agreement" in row else ""
            print(
                f"{row['approach']:>11} {row['timed_targets']:>6} {row['images_per_s']:>7.2f} "
                f"{row['cpu_s_per_image']:>9.3f}{extra}",
                flush=True,
            )

        exact = None
        tree = None
        for approach in args.approaches:
            if approach in ("stages", "previous") and tree is None:
                tree = export_tree(args.baseline_rev, tmp)
            if approach == "stages":
                stages = measure_stages(spec, tree, args, tmp)
                rows.append({"approach": "stages", **stages})
                print("CPU ms per photo outside the model (one thread):", flush=True)
                print(
                    f"{'code':>11} {'read':>7} {'post':>7} {'write':>7} {'total':>7} {'PNG KiB':>8}"
                )
                for which in ("previous", "new"):
                    r = stages[which]
                    print(
                        f"{which:>11} {r['read']:>7.0f} {r['post']:>7.0f} {r['write']:>7.0f} "
                        f"{r['total']:>7.0f} {r['png_kib']:>8.0f}"
                    )
                ratio = stages["previous"]["total"] / stages["new"]["total"]
                print(f"previous / new: {ratio:.2f}x less CPU outside the model\n", flush=True)
                print(f"{'approach':>11} {'timed':>6} {'img/s':>7} {'CPU s/img':>9}", flush=True)
            elif approach == "new":
                show(measure_cli("new", spec, REPO, [], args.n, args))
                exact = read_preds(spec)
            elif approach == "fast":
                row = measure_cli("fast", spec, REPO, ["--fast-decode"], args.n, args)
                if exact is not None:
                    row["agreement"] = agreement(spec, exact)
                show(row)
            elif approach == "previous":
                row = measure_cli("previous", spec, tree, [], args.n, args)
                if exact is not None:
                    row["identical_masks"] = all(
                        np.array_equal(mask, exact[pk]) for pk, mask in read_preds(spec).items()
                    )
                show(row)
            else:
                show(measure_upstream(approach, spec, checkpoint, args, tmp))
        by = {row["approach"]: row for row in rows if row["approach"] != "stages"}
        new = by.get("new")
        if new:
            for other in ("previous", "video", "per-target", "fast"):
                if other in by:
                    o = by[other]
                    print(
                        f"new vs {other}: {new['images_per_s'] / o['images_per_s']:.2f}x images/s, "
                        f"{o['cpu_s_per_image'] / new['cpu_s_per_image']:.2f}x less CPU per image",
                        flush=True,
                    )
            if "previous" in by and "identical_masks" in by["previous"]:
                print(f"previous == new masks (pixels): {by['previous']['identical_masks']}")
        for name in ("new", "fast"):
            if name in by and "timings" in by[name]:
                print(f"\nStages of the full '{name}' run:")
                print("\n".join(stage_table(by[name]["timings"])))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
