"""Benchmark: SST Desktop's candidate generator vs upstream SAM2AutomaticMaskGenerator.

For each case (image size x model size x mask kind) it runs both generators once, on the same
model and pixels with the same settings, checks that the masks are identical, and prints:
  seconds per image for each, the ratio upstream / ours,
  ours: time to the first candidates (first prompt batch, candidates built) against the encoder time,
  the split: image encoder, mask decoder (prompt encoder + decoder), filtering/deduplication
  (upstream: MaskData.cat copies and RLE encode/decode shown apart), everything else.
Mask kinds: "random" = random weights as they are (noisy masks with long run-length encodings,
the worst case for upstream's bookkeeping); "smooth" = a decoder test double that returns smooth
disks around each prompt (what real weights look like to the bookkeeping).

Without --checkpoint it builds hiera-tiny random weights for each model size. Example:
  python benchmarks/bench_candidates.py --threads 1
Times are CPU seconds of the process (time.process_time), the wall-clock time too in the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# CPU seconds of this process (all threads): steadier than wall time on a shared machine.
CLOCK = time.process_time


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic smooth 'photo' with a few flat shapes (something to separate)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = np.asarray(
        Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    ).copy()
    yy, xx = np.ogrid[0:height, 0:width]
    for _ in range(6):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        r = rng.uniform(0.05, 0.15) * min(height, width)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def random_checkpoint(image_size: int, folder: Path) -> Path:
    """hiera-tiny with random weights (they time the same as real ones)."""
    import sam2  # noqa: F401  (initialises Hydra on sam2's configs)
    import torch
    from hydra import compose
    from hydra.utils import instantiate

    torch.manual_seed(0)
    cfg = compose(config_name=CONFIG, overrides=[f"++model.image_size={image_size}"])
    path = folder / f"tiny_{image_size}.pt"
    torch.save({"model": instantiate(cfg.model, _recursive_=True).state_dict()}, path)
    return path


@contextmanager
def blob_decoder(model, image_size: int):
    """Decoder test double: smooth disks around each prompt, scores that differ per prompt."""
    import torch

    seen = {}
    prompt_forward = model.sam_prompt_encoder.forward

    def prompt(points, boxes, masks):
        seen["points"] = points[0]
        return prompt_forward(points=points, boxes=boxes, masks=masks)

    def decoder(image_embeddings, multimask_output, **_):
        xy = seen["points"][:, 0, :] / 4
        low = image_size // 4
        yy, xx = torch.meshgrid(torch.arange(low), torch.arange(low), indexing="ij")
        dx = xx[None] + 0.5 - xy[:, 0, None, None]
        dy = yy[None] + 0.5 - xy[:, 1, None, None]
        dist = (dx**2 + dy**2).sqrt()
        radii = torch.tensor([0.04, 0.08, 0.15] if multimask_output else [0.08]) * low
        logits = (radii[None, :, None, None] - dist[:, None]) * (32.0 / low)
        iou = torch.frac(xy[:, :1] * 0.37 + xy[:, 1:] * 0.61 + radii[None] * 0.1) * 0.5 + 0.5
        n = xy.shape[0]
        return logits, iou, torch.zeros(n, 1, 256), torch.zeros(n, 1)

    model.sam_prompt_encoder.forward = prompt
    model.sam_mask_decoder.forward = decoder
    try:
        yield
    finally:
        del model.sam_prompt_encoder.forward
        del model.sam_mask_decoder.forward


class Clock:
    """Sums the time spent in wrapped callables, per label."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, label: str, fn):
        def timed(*args, **kwargs):
            start = CLOCK()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + CLOCK() - start

        return timed


def run_upstream(handle, image: np.ndarray, settings: dict) -> tuple[list[dict], dict]:
    """Upstream's generator, with its encoder, decoder, MaskData.cat and RLE times measured."""
    import sam2.automatic_mask_generator as amg
    import torch
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from sst_desktop.engine.candidates import _set_feature_sizes

    clock = Clock()
    model = handle.model
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    _set_feature_sizes(generator.predictor, handle.image_size)
    generator.predictor.set_image = clock.wrap("encoder", generator.predictor.set_image)
    saved = {
        "prompt": model.sam_prompt_encoder.forward,
        "decoder": model.sam_mask_decoder.forward,
        "cat": amg.MaskData.cat,
        "to_rle": amg.mask_to_rle_pytorch,
        "from_rle": amg.rle_to_mask,
    }
    model.sam_prompt_encoder.forward = clock.wrap("decoder", saved["prompt"])
    model.sam_mask_decoder.forward = clock.wrap("decoder", saved["decoder"])
    amg.MaskData.cat = clock.wrap("MaskData.cat", saved["cat"])
    amg.mask_to_rle_pytorch = clock.wrap("RLE", saved["to_rle"])
    amg.rle_to_mask = clock.wrap("RLE", saved["from_rle"])
    try:
        start = CLOCK()
        with torch.inference_mode():
            records = generator.generate(image)
        total = CLOCK() - start
    finally:
        model.sam_prompt_encoder.forward = saved["prompt"]
        model.sam_mask_decoder.forward = saved["decoder"]
        amg.MaskData.cat = saved["cat"]
        amg.mask_to_rle_pytorch = saved["to_rle"]
        amg.rle_to_mask = saved["from_rle"]
    split = dict(clock.spent, total=total)
    split["other"] = total - sum(v for k, v in clock.spent.items())
    return records, split


def run_ours(handle, image: np.ndarray, settings: dict) -> tuple[list, dict]:
    """SST Desktop's generator, streamed: time to the first candidates and its own split."""
    from sst_desktop.engine.candidates import CandidateUpdate, stream_candidates
    from sst_desktop.engine.mask_generator import Timings

    timings = Timings(clock=CLOCK)
    first = None
    start = CLOCK()
    for item in stream_candidates(handle, image, dict(settings), timings=timings):
        if isinstance(item, CandidateUpdate):
            if first is None:
                item.candidates()  # what a screen would show after the first batch
                first = CLOCK() - start
        else:
            found = item
    total = CLOCK() - start
    # The fast preset decodes 16 points per step: its first candidates come after a smaller step.
    start = CLOCK()
    for item in stream_candidates(handle, image, dict(settings, points_per_batch=16)):
        item.candidates()
        break
    first16 = CLOCK() - start
    split = {
        "encoder": timings.encoder,
        "decoder": timings.decoder,
        "filtering": timings.filtering,
        "other": total - timings.encoder - timings.decoder - timings.filtering,
        "total": total,
        "first": first,
        "first16": first16,
    }
    return found, split


def same_masks(ours: list, theirs: list[dict]) -> bool:
    """Identical masks, scores within float rounding, and the same order after sorting by area."""
    theirs = sorted((r for r in theirs if r["area"] > 0), key=lambda r: -r["area"])
    if len(ours) != len(theirs):
        return False
    return all(
        np.array_equal(c.mask, r["segmentation"])
        and abs(c.predicted_iou - r["predicted_iou"]) < 1e-5
        and abs(c.stability_score - r["stability_score"]) < 1e-5
        for c, r in zip(ours, theirs, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument(
        "--images",
        nargs="+",
        default=["480x640:16", "3000x4000:8"],
        help="HxW:points_per_side per image (the 12-MP photo is downscaled to --max-side)",
    )
    parser.add_argument("--kinds", nargs="+", default=["random", "smooth"])
    parser.add_argument("--max-side", type=int, default=2048)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from sst_desktop.engine import sam2_model
    from sst_desktop.engine.candidates import _downscale

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_size in args.model_sizes:
            ckpt = random_checkpoint(model_size, Path(tmp))
            handle = sam2_model.get_model(
                "sam2.1_hiera_tiny", device="cpu", checkpoint=ckpt, image_size=model_size
            )
            for spec in args.images:
                shape, points = spec.split(":")
                h, w = (int(v) for v in shape.split("x"))
                image = _downscale(synthetic_photo(h, w), args.max_side)
                settings = dict(
                    points_per_side=int(points),
                    points_per_batch=args.points_per_batch,
                    pred_iou_thresh=0.0,  # keep every mask: the bookkeeping's full load
                    stability_score_thresh=0.0,
                )
                for kind in args.kinds:
                    ctx = blob_decoder(handle.model, model_size) if kind == "smooth" else None
                    with ctx or _nothing():
                        wall = time.perf_counter()
                        ours, o = run_ours(handle, image, settings)
                        o["wall"] = time.perf_counter() - wall
                        wall = time.perf_counter()
                        theirs, u = run_upstream(handle, image, settings)
                        u["wall"] = time.perf_counter() - wall
                    row = {
                        "image": f"{h}x{w}",
                        "generator_input": f"{image.shape[0]}x{image.shape[1]}",
                        "model_size": model_size,
                        "kind": kind,
                        "points_per_side": int(points),
                        "masks": len(ours),
                        "identical": same_masks(ours, theirs),
                        "ours": o,
                        "upstream": u,
                        "ratio": u["total"] / o["total"],
                        "first_vs_encoder": o["first"] / o["encoder"],
                    }
                    rows.append(row)
                    print(format_row(row), flush=True)
                    print(markdown([row]).splitlines()[-1], flush=True)  # the table row so far
                    if args.json:
                        args.json.write_text(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print()
    print(markdown(rows))
    return 0


@contextmanager
def _nothing():
    yield


def format_row(row: dict) -> str:
    o, u = row["ours"], row["upstream"]
    return (
        f"{row['image']} ({row['generator_input']}) size {row['model_size']} {row['kind']} "
        f"pps {row['points_per_side']}: ours {o['total']:.2f}s upstream {u['total']:.2f}s "
        f"ratio {row['ratio']:.1f}x first {o['first']:.2f}s (steps of 16: {o['first16']:.2f}s) "
        f"encoder {o['encoder']:.2f}s "
        f"identical={row['identical']} masks={row['masks']}"
    )


def markdown(rows: list[dict]) -> str:
    lines = [
        "| image (generator input) | model | masks | points/side | upstream s | ours s | ratio | "
        "first candidates s (x encoder) | same, steps of 16 | identical | ours: encoder / decoder / filter+dedup / "
        "other | upstream: encoder / decoder / MaskData.cat / RLE / other |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        o, u = r["ours"], r["upstream"]
        lines.append(
            f"| {r['image']} ({r['generator_input']}) | {r['model_size']} | {r['kind']}, "
            f"{r['masks']} | {r['points_per_side']} | {u['total']:.2f} | {o['total']:.2f} | "
            f"{r['ratio']:.1f}x | {o['first']:.2f} ({r['first_vs_encoder']:.2f}x) | "
            f"{o['first16']:.2f} ({o['first16'] / o['encoder']:.2f}x) | "
            f"{'yes' if r['identical'] else 'NO'} | {o['encoder']:.2f} / {o['decoder']:.2f} / "
            f"{o['filtering']:.2f} / {o['other']:.2f} | {u.get('encoder', 0):.2f} / "
            f"{u.get('decoder', 0):.2f} / {u.get('MaskData.cat', 0):.2f} / {u.get('RLE', 0):.2f} / "
            f"{u['other']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
