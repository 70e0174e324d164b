"""Automatic mask generation batch by batch: the masks of upstream SAM2's automatic mask generator.

Upstream's `SAM2AutomaticMaskGenerator` run-length encodes every mask of every prompt batch and
deep-copies everything accumulated so far on each batch (quadratic in the number of masks), then
decodes the survivors again. Here each batch is filtered on tensors (predicted IoU before the
upsampling, so rejected masks are never upsampled), the surviving masks are kept bit-packed and
cropped to their box, and duplicate removal runs on the boxes alone (exactly upstream's NMS calls
on the same boxes, scores and order). Only the masks that survive are unpacked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Upsampled logits are float32 at the crop's size: bound what one upsampling step allocates.
_UPSAMPLE_BYTES = 64 * 1024 * 1024

# Prompts in an image's first batch: its candidates show soon after the image is encoded.
FIRST_STEP = 8
# Output pixels per low-res cell from which the low-res bounds beat upsampling on the CPU.
BOUNDS_MIN_PIXELS_PER_CELL = 16

# What one generation step reports: (prompt batches done, total prompt batches).
StepFn = Callable[[int, int], None]


@dataclass
class Timings:
    """Seconds spent per stage of one generation (for benchmarks and logs)."""

    encoder: float = 0.0  # image encoder (whole image and crops)
    decoder: float = 0.0  # prompt encoder + mask decoder
    filtering: float = 0.0  # upsampling, scores, thresholds, boxes, packing, duplicate removal
    total: float = 0.0
    # Wall time by default; a benchmark on a busy machine may pass time.process_time.
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)

    def other(self) -> float:
        """Everything not in the three stages above."""
        return max(0.0, self.total - self.encoder - self.decoder - self.filtering)


@dataclass
class GeneratedMask:
    """One mask that passed the filters, kept small until it is needed at full size."""

    uid: int  # order of creation: stable across provisional and final results
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive) in the generator image
    packed: np.ndarray = field(repr=False)  # np.packbits of the mask cropped to `box`
    predicted_iou: float = 0.0
    stability_score: float = 0.0
    point: tuple[float, float] = (0.0, 0.0)  # the prompt (x, y) in generator-image pixels
    crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 of its crop

    @property
    def area(self) -> int:
        """Pixels in the mask."""
        return int(np.unpackbits(self.packed).sum())

    def mask(self, image_hw: tuple[int, int]) -> np.ndarray:
        """The (H, W) bool mask in the generator image."""
        x0, y0, x1, y1 = self.box
        out = np.zeros(image_hw, dtype=bool)
        if x1 < x0 or y1 < y0:
            return out
        h, w = y1 - y0 + 1, x1 - x0 + 1
        bits = np.unpackbits(self.packed, count=h * w).astype(bool)
        out[y0 : y1 + 1, x0 : x1 + 1] = bits.reshape(h, w)
        return out


@dataclass
class _Crop:
    """Boxes and scores of one crop's masks so far (tensors per batch), and the masks."""

    box: tuple[int, int, int, int]
    boxes: list[Any] = field(default_factory=list)  # (n, 4) int64, crop frame, per batch
    scores: list[Any] = field(default_factory=list)  # (n,) predicted IoU per batch
    masks: list[GeneratedMask] = field(default_factory=list)


# Idle predictors per loaded model: building one compiles its transforms (about a second on CPU).
_idle: dict[int, list[Any]] = {}
_idle_lock = threading.Lock()


def bounds_pay(low_res: Any, crop_hw: tuple[int, int]) -> bool:
    """Whether the low-res bounds are cheaper than upsampling every mask (both are exact).

    On an accelerator upsampling is cheap. On the CPU the bounds win when each low-res cell
    covers many output pixels (model size 256 on a photo: ~75), not when the low-res grid is
    nearly as big as the output (1024 on 640x480: ~5; measured 2.3x slower there). Non-finite
    logits have no bounds: upstream's computation decides them.
    """
    cells = low_res.shape[-2] * low_res.shape[-1]
    return (
        low_res.device.type == "cpu"
        and crop_hw[0] * crop_hw[1] >= BOUNDS_MIN_PIXELS_PER_CELL * cells
        and bool(low_res.isfinite().all())
    )


def _borrow_predictor(handle: Any) -> Any:
    """An image predictor for `handle` set up as upstream's generator sets up its own."""
    with _idle_lock:
        idle = _idle.get(id(handle))
        if idle:
            return idle.pop()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    # No hole or sprinkle removal (the minimum region area is applied afterwards, see candidates).
    predictor = SAM2ImagePredictor(
        handle.model, max_hole_area=0, max_sprinkle_area=0, mask_threshold=0.0
    )
    predictor._bb_feat_sizes = [(handle.image_size // s,) * 2 for s in (4, 8, 16)]
    return predictor


def _return_predictor(handle: Any, predictor: Any) -> None:
    """Keep a predictor for the next generation (at most two per model)."""
    predictor.reset_predictor()
    with _idle_lock:
        idle = _idle.setdefault(id(handle), [])
        if len(idle) < 2:
            idle.append(predictor)


class MaskGenerator:
    """Upstream's automatic mask generator, same settings and results, without its bookkeeping.

    `settings` has the attributes of CandidateParams. `embedding(image)` may supply the whole
    image's features (a dict like SAM2ImagePredictor._features) so an embedding is computed once.
    """

    def __init__(
        self,
        handle: Any,
        settings: Any,
        embedding: Callable[[np.ndarray], dict] | None = None,
        lock: Callable[[], Any] | None = None,
    ) -> None:
        from sam2.utils.amg import build_all_layer_point_grids

        self.handle = handle
        self.s = settings
        self.mask_threshold = 0.0
        self.crop_overlap_ratio = 512 / 1500  # upstream's default
        self.point_grids = build_all_layer_point_grids(
            settings.points_per_side,
            settings.crop_n_layers,
            settings.crop_n_points_downscale_factor,
        )
        self._embedding = embedding
        self._lock = lock
        self.timings = Timings()
        self._uid = 0
        self._geometries: dict = {}
        # How much full-size work the low-res bounds saved (for benchmarks and logs).
        self.bound_stats = dict(masks=0, rejected_by_bounds=0, exact_pixels=0, full_pixels=0)
        self.predictor = _borrow_predictor(handle)

    def close(self) -> None:
        """Give the predictor back for the next generation on this model."""
        if self.predictor is not None:
            _return_predictor(self.handle, self.predictor)
            self.predictor = None

    def crops(self, image_hw: tuple[int, int]) -> tuple[list[list[int]], list[int]]:
        """Upstream's crop boxes and their layers for an image of this size."""
        from sam2.utils.amg import generate_crop_boxes

        return generate_crop_boxes(image_hw, self.s.crop_n_layers, self.crop_overlap_ratio)

    def batch_total(self, image_hw: tuple[int, int]) -> int:
        """How many prompt batches an image of this size takes."""
        _, layers = self.crops(image_hw)
        return sum(
            len(self._steps(len(self.point_grids[layer]), first=i == 0))
            for i, layer in enumerate(layers)
        )

    def _steps(self, n: int, first: bool) -> list[slice]:
        """Prompt batches of `n` points; the image's first is small so candidates show early
        (each mask is filtered on its own, so how prompts are batched changes no result)."""
        per = self.s.points_per_batch
        head = min(per, FIRST_STEP) if first else per
        return [slice(0, head)] + [slice(i, i + per) for i in range(head, n, per)]

    def run(self, image: np.ndarray) -> Iterator[tuple[int, int]]:
        """Generate on `image` (H, W, 3 uint8), yielding (batches done, total) after each batch."""
        start = self.timings.clock()
        hw = image.shape[:2]
        crop_boxes, layers = self.crops(hw)
        total = self.batch_total(hw)
        self._crops: list[_Crop] = []
        self._hw = hw
        done = 0
        try:
            for crop_box, layer in zip(crop_boxes, layers, strict=True):
                crop = _Crop(box=tuple(int(v) for v in crop_box))
                self._crops.append(crop)
                self._encode(image, crop.box, whole=layer == 0)
                x0, y0, x1, y1 = crop.box
                crop_hw = (y1 - y0, x1 - x0)
                points = self.point_grids[layer] * np.array(crop_hw)[None, ::-1]
                for step in self._steps(len(points), first=not self._crops[:-1]):
                    self._batch(crop, points[step], crop_hw)
                    done += 1
                    yield done, total
                self.predictor.reset_predictor()
        finally:
            self.timings.total += self.timings.clock() - start
            if self._embedding is not None:
                self.predictor.reset_predictor()  # do not keep a shared embedding alive

    def result(self) -> list[GeneratedMask]:
        """The masks kept so far after upstream's duplicate removal, in upstream's order."""
        import torch
        from sam2.utils.amg import uncrop_boxes_xyxy
        from torchvision.ops.boxes import batched_nms, box_area

        start = self.timings.clock()
        kept_masks, kept_boxes, crop_boxes = [], [], []
        for crop in getattr(self, "_crops", []):
            if not crop.masks:
                continue
            boxes = torch.cat(crop.boxes)
            keep = batched_nms(
                boxes.float(),
                torch.cat(crop.scores),
                torch.zeros_like(boxes[:, 0]),
                iou_threshold=self.s.box_nms_thresh,
            )
            kept_masks += [crop.masks[i] for i in keep.tolist()]
            kept_boxes.append(uncrop_boxes_xyxy(boxes[keep], list(crop.box)))
            crop_boxes.append(torch.tensor([list(crop.box)] * len(keep)))
        if len(self._crops) > 1 and kept_masks:
            # Across crops prefer masks from smaller crops (upstream's rule).
            boxes = torch.cat(kept_boxes)
            keep = batched_nms(
                boxes.float(),
                1 / box_area(torch.cat(crop_boxes)),
                torch.zeros_like(boxes[:, 0]),
                iou_threshold=self.s.crop_nms_thresh,
            )
            kept_masks = [kept_masks[i] for i in keep.tolist()]
        self.timings.filtering += self.timings.clock() - start
        return kept_masks

    # -----------------------------------------------------------------------------------------

    def _locked(self):
        """The model lock for one step (the caller's, or the handle's own)."""
        from sst_desktop.engine.sam2_model import inference

        return self._lock() if self._lock is not None else inference(self.handle)

    def _encode(self, image: np.ndarray, crop_box: tuple[int, ...], whole: bool) -> None:
        """Image features of one crop into the predictor (the shared embedding for the image)."""
        start = self.timings.clock()
        x0, y0, x1, y1 = crop_box
        if whole and self._embedding is not None:
            features = self._embedding(image)
            self.predictor.reset_predictor()
            self.predictor._features = features
            self.predictor._orig_hw = [image.shape[:2]]
            self.predictor._is_image_set = True
        else:
            with self._locked():
                self.predictor.set_image(image[y0:y1, x0:x1, :])
        self.timings.encoder += self.timings.clock() - start

    def _decode(self, points: Any, mask_input: Any = None, multimask: bool = True):
        """Low-res logits (unclamped) and predicted IoUs, as upstream's predictor computes them."""
        import torch

        start = self.timings.clock()
        predictor, model = self.predictor, self.handle.model
        labels = torch.ones(points.shape[0], dtype=torch.int, device=points.device)
        with self._locked():
            sparse, dense = model.sam_prompt_encoder(
                points=(points[:, None, :], labels[:, None]), boxes=None, masks=mask_input
            )
            features = predictor._features
            low_res, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=features["image_embed"][-1].unsqueeze(0),
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=points.shape[0] > 1,
                high_res_features=[level[-1].unsqueeze(0) for level in features["high_res_feats"]],
            )
        self.timings.decoder += self.timings.clock() - start
        return low_res, iou

    def _batch(self, crop: _Crop, points_np: np.ndarray, crop_hw: tuple[int, int]) -> None:
        """Decode one prompt batch, filter it like upstream, keep the survivors packed."""
        import torch

        device = self.predictor.device
        points = torch.as_tensor(points_np, dtype=torch.float32, device=device)
        in_points = self.predictor._transforms.transform_coords(
            points, normalize=True, orig_hw=crop_hw
        )
        low_res, iou = self._decode(in_points, multimask=self.s.multimask_output)
        start, decoding = self.timings.clock(), self.timings.decoder
        per_prompt = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        points = points.repeat_interleave(per_prompt, dim=0)
        if self.s.use_m2m:
            low_res, iou = self._m2m(points, torch.clamp(low_res, -32.0, 32.0), crop_hw)
        if self.s.pred_iou_thresh > 0.0:
            keep = iou > self.s.pred_iou_thresh
            low_res, iou, points = low_res[keep], iou[keep], points[keep]
        # Upsample the survivors in chunks (upstream upsamples every mask of the batch at once).
        chunk = max(1, _UPSAMPLE_BYTES // (4 * crop_hw[0] * crop_hw[1]))
        for first in range(0, len(low_res), chunk):
            part = slice(first, first + chunk)
            self._keep(crop, low_res[part], iou[part], points[part], crop_hw)
        # The m2m pass decodes again: that time is the decoder's, not the filter's.
        self.timings.filtering += self.timings.clock() - start - (self.timings.decoder - decoding)

    def _m2m(self, points: Any, low_res: Any, crop_hw: tuple[int, int]):
        """Upstream's one-step refinement of every mask from its own low-res logits."""
        import torch

        in_points = self.predictor._transforms.transform_coords(
            points, normalize=True, orig_hw=crop_hw
        )
        outs, ious = [], []
        per = self.s.points_per_batch
        for first in range(0, len(in_points), per):
            part = slice(first, first + per)
            out, iou = self._decode(
                in_points[part], mask_input=low_res[part][:, None, :], multimask=False
            )
            outs.append(out.squeeze(1))
            ious.append(iou.squeeze(1))
        return torch.cat(outs), torch.cat(ious)

    def _keep(self, crop: _Crop, low_res: Any, iou: Any, points: Any, crop_hw) -> None:
        """Stability, threshold, boxes and the crop-edge rule as on upsampled logits; pack the rest."""
        from sam2.utils.amg import is_box_near_crop_edge

        if bounds_pay(low_res, crop_hw):
            found = self._measure(low_res, crop_hw)
        else:
            found = self._measure_upsampled(low_res, crop_hw)
        iou, points = iou[found.keep.to(iou.device)], points[found.keep.to(points.device)]
        stability, boxes, masks = found.stability, found.boxes, found.masks
        keep = ~is_box_near_crop_edge(boxes, list(crop.box), [0, 0, self._hw[1], self._hw[0]])
        if not bool(keep.all()):
            iou, points = iou[keep.to(iou.device)], points[keep.to(points.device)]
            stability, boxes = stability[keep], boxes[keep]
            masks = [m for m, ok in zip(masks, keep.tolist(), strict=True) if ok]
        if not len(masks):
            return
        crop.boxes.append(boxes)
        crop.scores.append(iou.cpu())
        x_off, y_off = crop.box[0], crop.box[1]
        for mask, box, score, stab, point in zip(
            masks,
            boxes.tolist(),
            iou.float().tolist(),
            stability.float().tolist(),
            points.tolist(),
            strict=True,
        ):
            x0, y0, x1, y1 = box  # an empty mask has box [0, 0, 0, 0] (upstream's convention)
            crop.masks.append(
                GeneratedMask(
                    uid=self._uid,
                    box=(x0 + x_off, y0 + y_off, x1 + x_off, y1 + y_off),
                    packed=np.packbits(mask),
                    predicted_iou=score,
                    stability_score=stab,
                    point=(point[0] + x_off, point[1] + y_off),
                    crop_box=crop.box,
                )
            )
            self._uid += 1

    def _measure(self, low_res: Any, crop_hw: tuple[int, int]):
        """Upstream's numbers from low-res logits, upsampling only the uncertain parts."""
        from sst_desktop.engine import upsampled_masks

        key = (tuple(low_res.shape[-2:]), tuple(crop_hw))
        geometry = self._geometries.get(key)
        if geometry is None:
            geometry = self._geometries[key] = upsampled_masks.Geometry(*key)
        found = upsampled_masks.measure(
            low_res,
            geometry,
            threshold=self.mask_threshold,
            offset=self.s.stability_score_offset,
            stability_thresh=self.s.stability_score_thresh,
        )
        self.bound_stats["exact_pixels"] += found.exact_pixels
        self.bound_stats["full_pixels"] += len(low_res) * crop_hw[0] * crop_hw[1]
        self.bound_stats["rejected_by_bounds"] += found.rejected_by_bounds
        self.bound_stats["masks"] += len(low_res)
        return found

    def _measure_upsampled(self, low_res: Any, crop_hw: tuple[int, int]):
        """Upstream's own computation on the full-size logits (all masks at once)."""
        import torch
        from sam2.utils.amg import batched_mask_to_box, calculate_stability_score

        from sst_desktop.engine.upsampled_masks import Measured

        logits = self.predictor._transforms.postprocess_masks(low_res[:, None], crop_hw)[:, 0]
        stability = calculate_stability_score(
            logits, self.mask_threshold, self.s.stability_score_offset
        )
        keep = torch.arange(len(logits), device=logits.device)
        if self.s.stability_score_thresh > 0.0:
            passed = stability >= self.s.stability_score_thresh
            logits, stability, keep = logits[passed], stability[passed], keep[passed]
        masks = logits > self.mask_threshold
        boxes = batched_mask_to_box(masks).cpu()
        crops = [
            mask[y0 : y1 + 1, x0 : x1 + 1]
            for mask, (x0, y0, x1, y1) in zip(masks.cpu().numpy(), boxes.tolist(), strict=True)
        ]
        return Measured(keep.cpu(), stability.cpu(), boxes, crops)
