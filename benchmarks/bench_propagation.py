"""Benchmark: SST Desktop's propagation engine vs upstream SAM2 pseudo-video propagation.

For each group size it measures, each in a fresh process (so peak memory is that approach's own):
  engine      build_reference_memory once + propagate(batch_size) over every target
  video       upstream's way: one init_state video [refs, t1, ..., tN], add_new_mask, propagate_in_video
              (a different definition: later targets attend to earlier ones, order-dependent)
  per-target  the original SST-GUI's exact-definition way: a new pseudo-video [refs, t] per target
              (slow; timed on the first --per-target-max targets)
and prints images/s, peak memory and the engine's speed-up over each baseline.

Without --checkpoint it builds random weights for the variant (they time the same as real ones).
Targets are synthetic photos generated on the fly (deterministic per index), references get
--objects blob masks. Example:
  python benchmarks/bench_propagation.py --sizes 20 100 --image-size 256 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

APPROACHES = ("engine", "video", "per-target")


# --------------------------------------------------------------------------- synthetic data


def synthetic_image(index: int, height: int, width: int) -> np.ndarray:
    """A deterministic smooth 'photo' (low-frequency colour field plus noise) for frame `index`."""
    from PIL import Image

    rng = np.random.default_rng(1000 + index)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.integers(-10, 11, size=(height, width, 3))
    return np.clip(big.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def synthetic_mask(index: int, height: int, width: int, objects: int) -> np.ndarray:
    """An ID mask with one ellipse per object ID 1..objects."""
    rng = np.random.default_rng(5000 + index)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), dtype=np.uint8)
    for obj_id in range(1, objects + 1):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        ry, rx = rng.uniform(0.1, 0.25) * height, rng.uniform(0.1, 0.25) * width
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = obj_id
    return mask


def target_size(index: int, base: tuple[int, int]) -> tuple[int, int]:
    """Targets alternate between landscape and portrait, as in a real group."""
    h, w = base
    return (h, w) if index % 2 == 0 else (w, h)


# --------------------------------------------------------------------------- memory


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss: KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------- worker


def worker(cfg: dict) -> dict:
    """Run one approach on one group in this process and return its measurements."""
    import torch

    from sst_desktop.engine.sam2_model import get_model

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    handle = get_model(
        cfg["variant"],
        device=cfg["device"],
        checkpoint=cfg["checkpoint"],
        image_size=cfg["image_size"],
    )
    cuda = handle.device.type == "cuda"
    base = tuple(cfg["target_hw"])
    refs = [
        (
            synthetic_image(-1 - r, *target_size(r, base)),
            synthetic_mask(r, *target_size(r, base), cfg["objects"]),
        )
        for r in range(cfg["refs"])
    ]
    n = cfg["n"]
    if cfg["approach"] == "per-target":
        n = min(n, cfg["per_target_max"])
    # Warm-up (first-call allocations, kernel selection) outside the timed part.
    _engine(handle, refs, 1, base, cfg["batch_size"])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_mb()
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    if cfg["approach"] == "engine":
        _engine(handle, refs, n, base, cfg["batch_size"])
    elif cfg["approach"] == "video":
        _upstream_video(handle, refs, range(n), base)
    else:
        for i in range(n):
            _upstream_video(handle, refs, [i], base)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    return {
        "approach": cfg["approach"],
        "group": cfg["n"],
        "timed_targets": n,
        "seconds": elapsed,
        "images_per_s": n / elapsed,
        # CPU seconds of this process (all its threads): steadier than wall time on a shared machine.
        "cpu_s_per_image": cpu / n,
        "rss_after_load_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": str(handle.device),
        "threads": torch.get_num_threads(),
    }


def _engine(handle, refs, n: int, base, batch_size: int) -> None:
    from sst_desktop.engine.propagation import build_reference_memory, propagate

    memory = build_reference_memory(handle, refs)
    targets = ((i, (lambda i=i: synthetic_image(i, *target_size(i, base)))) for i in range(n))
    for result in propagate(handle, memory, targets, batch_size=batch_size):
        assert result.ok, result.error


def _upstream_video(handle, refs, target_indices, base) -> None:
    """Upstream SAM2VideoPredictor on the video [refs..., targets...] (frames built in memory)."""
    from unittest import mock

    import torch

    from sst_desktop.engine.propagation import preprocess_image

    model = handle.model
    frames = [img for img, _ in refs] + [
        synthetic_image(i, *target_size(i, base)) for i in target_indices
    ]
    last_h, last_w = frames[-1].shape[:2]

    def loader(**kwargs):
        # What upstream's JPEG-folder loader returns: every frame resized and normalised up front.
        images = torch.stack([preprocess_image(f, handle.image_size) for f in frames])
        if not kwargs.get("offload_video_to_cpu"):
            images = images.to(kwargs["compute_device"])
        return images, last_h, last_w

    with handle.lock, torch.inference_mode(), handle.autocast():
        with mock.patch("sam2.sam2_video_predictor.load_video_frames", side_effect=loader):
            state = model.init_state(video_path="<in-memory>")
        del frames[len(refs) :]
        for frame_idx, (_, idmask) in enumerate(refs):
            for obj_id in sorted(set(np.unique(idmask).tolist()) - {0}):
                model.add_new_mask(state, frame_idx=frame_idx, obj_id=obj_id, mask=idmask == obj_id)
        for frame_idx, _, video_res_masks in model.propagate_in_video(state):
            if frame_idx >= len(refs):
                (video_res_masks > 0).cpu()  # what a caller does with each frame


# --------------------------------------------------------------------------- driver


def random_checkpoint(variant_name: str, image_size: int, folder: Path) -> Path:
    """Random weights for `variant_name`, saved under the official file name (they time the same)."""
    import sam2  # noqa: F401  (initialises Hydra on sam2's configs)
    import torch
    from hydra import compose
    from hydra.utils import instantiate

    from sst_desktop.engine.models import resolve_variant

    variant = resolve_variant(variant_name)
    path = folder / variant.checkpoint_name
    cfg = compose(config_name=variant.config, overrides=[f"++model.image_size={image_size}"])
    torch.manual_seed(0)
    torch.save({"model": instantiate(cfg.model, _recursive_=True).state_dict()}, path)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[20, 100, 500], help="group sizes (targets)"
    )
    p.add_argument("--approaches", nargs="+", choices=APPROACHES, default=list(APPROACHES))
    p.add_argument("--variant", default="sam2.1_hiera_tiny")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: random weights)")
    p.add_argument("--image-size", type=int, default=1024, help="model input size (tests use 256)")
    p.add_argument("--batch-size", type=int, default=1, help="engine batch size (targets)")
    p.add_argument("--refs", type=int, default=2, help="references per group")
    p.add_argument("--objects", type=int, default=2, help="object IDs per reference")
    p.add_argument("--target-hw", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--per-target-max", type=int, default=20, help="targets timed for per-target")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or str(
            random_checkpoint(args.variant, args.image_size, Path(tmp))
        )
        rows = []
        print(
            f"variant={args.variant} image_size={args.image_size} device={args.device} "
            f"refs={args.refs} objects={args.objects} batch_size={args.batch_size} "
            f"targets={args.target_hw[0]}x{args.target_hw[1]} (alternating orientation)",
            flush=True,
        )
        header = f"{'group':>6} {'approach':>10} {'timed':>6} {'s':>8} {'img/s':>7} {'CPU s/img':>9} {'peak RSS MB':>11} {'peak GPU MB':>11}"
        print(header, flush=True)
        for n in args.sizes:
            by_approach = {}
            for approach in args.approaches:
                cfg = {
                    "approach": approach,
                    "n": n,
                    "variant": args.variant,
                    "device": args.device,
                    "checkpoint": checkpoint,
                    "image_size": args.image_size,
                    "batch_size": args.batch_size,
                    "refs": args.refs,
                    "objects": args.objects,
                    "target_hw": args.target_hw,
                    "per_target_max": args.per_target_max,
                    "threads": args.threads,
                }
                env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(cfg)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if out.returncode != 0:
                    print(
                        f"{n:>6} {approach:>10} FAILED: {out.stderr.strip().splitlines()[-1:]}",
                        flush=True,
                    )
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                by_approach[approach] = row
                gpu = f"{row['peak_gpu_mb']:.0f}" if row["peak_gpu_mb"] is not None else "-"
                print(
                    f"{n:>6} {approach:>10} {row['timed_targets']:>6} {row['seconds']:>8.1f} "
                    f"{row['images_per_s']:>7.2f} {row['cpu_s_per_image']:>9.3f} "
                    f"{row['peak_rss_mb']:>11.0f} {gpu:>11}",
                    flush=True,
                )
            engine = by_approach.get("engine")
            if engine:
                for name in ("video", "per-target"):
                    other = by_approach.get(name)
                    if other:
                        print(
                            f"{n:>6} engine vs {name}: {engine['images_per_s'] / other['images_per_s']:.2f}x "
                            f"images/s, {other['cpu_s_per_image'] / engine['cpu_s_per_image']:.2f}x "
                            f"less CPU per image, peak RSS {engine['peak_rss_mb'] - other['peak_rss_mb']:+.0f} MB",
                            flush=True,
                        )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
