"""Benchmark: what `reference_scope: all` costs, as the number of shared references grows.

For each reference count it runs, in a fresh process (so peak memory is that run's own), the
engine's reference memory build plus propagation of --targets targets, and prints CPU seconds per
target, the size of the encoded reference memory and peak memory, each also as a ratio to the
first (smallest) reference count measured in the same run. Random weights time the same as real
ones. Example:
  python benchmarks/bench_reference_scope.py --refs 1 8 32 --image-size 256 --targets 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_propagation import (  # noqa: E402  (benchmarks are scripts, not a package)
    cpu_seconds,
    peak_rss_mb,
    random_checkpoint,
    synthetic_image,
    synthetic_mask,
    target_size,
)


def worker(cfg: dict) -> dict:
    """Encode cfg['refs'] references and predict cfg['targets'] targets in this process."""
    import torch

    from sst_desktop.engine.propagation import build_reference_memory, propagate
    from sst_desktop.engine.sam2_model import get_model

    torch.set_num_threads(cfg["threads"])
    handle = get_model(
        cfg["variant"], device="cpu", checkpoint=cfg["checkpoint"], image_size=cfg["image_size"]
    )
    base = tuple(cfg["target_hw"])
    refs = [
        (
            synthetic_image(-1 - r, *target_size(r, base)),
            synthetic_mask(r, *target_size(r, base), cfg["objects"]),
        )
        for r in range(cfg["refs"])
    ]
    memory = build_reference_memory(handle, refs)
    memory_mb = (
        sum(
            t.numel() * t.element_size()
            for out in memory.cond_outputs
            for t in [out["maskmem_features"], *out["maskmem_pos_enc"], out["obj_ptr"]]
        )
        / 2**20
    )

    def targets(count: int, offset: int):
        return (
            (i, (lambda i=i: synthetic_image(i, *target_size(i, base))))
            for i in range(offset, offset + count)
        )

    for result in propagate(handle, memory, targets(1, 10_000)):  # warm-up, not timed
        assert result.ok, result.error
    cpu_start, start = cpu_seconds(), time.perf_counter()
    for result in propagate(handle, memory, targets(cfg["targets"], 0)):
        assert result.ok, result.error
    return {
        "refs": cfg["refs"],
        "cpu_s_per_target": (cpu_seconds() - cpu_start) / cfg["targets"],
        "wall_s_per_target": (time.perf_counter() - start) / cfg["targets"],
        "memory_mb": memory_mb,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refs", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--targets", type=int, default=4)
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--variant", default="sam2.1_hiera_tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target-hw", type=int, nargs=2, default=[480, 640])
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: random weights)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or str(
            random_checkpoint(args.variant, args.image_size, Path(tmp))
        )
        rows = []
        for refs in args.refs:
            cfg = {
                "refs": refs,
                "targets": args.targets,
                "objects": args.objects,
                "image_size": args.image_size,
                "variant": args.variant,
                "threads": args.threads,
                "target_hw": args.target_hw,
                "checkpoint": checkpoint,
            }
            out = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(cfg)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    first = rows[0]
    print(
        f"{args.variant} at {args.image_size} px, {args.objects} objects, {args.threads} thread(s),"
        f" {args.targets} targets"
    )
    print("refs | CPU s/target (x first) | reference memory MB (x first) | peak RSS MB")
    for row in rows:
        print(
            f"{row['refs']:>4} | {row['cpu_s_per_target']:.3f} "
            f"(x{row['cpu_s_per_target'] / first['cpu_s_per_target']:.2f}) | "
            f"{row['memory_mb']:.1f} (x{row['memory_mb'] / first['memory_mb']:.1f}) | "
            f"{row['peak_rss_mb']:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
