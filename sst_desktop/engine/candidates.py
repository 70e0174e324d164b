"""Candidate masks for a reference image (SAM2's automatic mask generator) and click refinement."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from sst_desktop.engine.sam2_model import Sam2Handle
from sst_desktop.errors import ImageError, UserError

# progress(batches_done, batches_total); may raise to cancel the generation.
ProgressFn = Callable[[int, int], None]


@dataclass
class CandidateParams:
    """User-tunable automatic-mask-generator settings; defaults are the original SST-GUI's."""

    points_per_side: int = 48  # grid of points_per_side**2 single-click prompts
    points_per_batch: int = 64  # prompts decoded at once (memory vs speed)
    pred_iou_thresh: float = 0.88  # keep masks whose predicted IoU is above this (0 = keep all)
    stability_score_thresh: float = 0.95  # keep masks at least this stable (0 = keep all)
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7  # box IoU above which a duplicate mask is dropped
    crop_n_layers: int = 0  # >0 also runs on 2x2, 4x4, ... crops (slower, finds small parts)
    crop_nms_thresh: float = 0.7
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0  # full-image pixels; smaller islands/holes are cleaned up
    max_side: int = 2048  # longer images are downscaled for the generator
    use_m2m: bool = False  # one extra refinement pass per mask (slower)
    multimask_output: bool = True

    _LIMITS = {
        "points_per_side": (1, 256),
        "points_per_batch": (1, 4096),
        "pred_iou_thresh": (0.0, 1.0),
        "stability_score_thresh": (0.0, 1.0),
        "stability_score_offset": (0.0, 100.0),
        "box_nms_thresh": (0.0, 1.0),
        "crop_n_layers": (0, 4),
        "crop_nms_thresh": (0.0, 1.0),
        "crop_n_points_downscale_factor": (1, 16),
        "min_mask_region_area": (0, 10**9),
        "max_side": (64, 100_000),
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise UserError(f"Candidate setting {f.name}={value!r} must be true or false.")
                continue
            lo, hi = self._LIMITS[f.name]
            is_int = isinstance(lo, int) and not isinstance(lo, bool)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if (
                isinstance(value, bool)
                or math.isnan(number)
                or not lo <= number <= hi
                or (is_int and number != int(number))
            ):
                kind = "a whole number" if is_int else "a number"
                raise UserError(
                    f"Candidate setting {f.name}={value!r} is invalid: use {kind} from {lo} to {hi}."
                )
            setattr(self, f.name, int(number) if is_int else number)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CandidateParams:
        """Params from a JSON-like dict (missing keys keep defaults; unknown keys -> UserError)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"Unknown candidate setting {unknown[0]!r}: use {', '.join(sorted(known))}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all settings (for the UI and JSON)."""
        return asdict(self)


@dataclass
class Candidate:
    """One candidate mask at the image's full size, with SAM2's own quality scores."""

    area: int  # pixels at full size
    predicted_iou: float
    stability_score: float
    bbox: tuple[int, int, int, int]  # x, y, width, height at full size
    point: tuple[float, float]  # the grid prompt (x, y) that produced it, full-size pixels
    # The mask at generator resolution; `mask` upsamples it on demand (saves memory for big photos).
    small_mask: np.ndarray = field(repr=False)
    full_size: tuple[int, int] = (0, 0)  # (height, width)

    @property
    def mask(self) -> np.ndarray:
        """The (H, W) bool mask at the image's full size (nearest-neighbour upsampling)."""
        return upsample_nearest(self.small_mask, self.full_size)


def upsample_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask to (height, width), sampling pixel centres."""
    rows, cols = _nearest_index(mask.shape[0], size[0]), _nearest_index(mask.shape[1], size[1])
    if len(rows) == mask.shape[0] and len(cols) == mask.shape[1]:
        return mask.copy()
    return mask[rows[:, None], cols[None, :]]


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each of `dst` output pixels (pixel-centre mapping, like PIL NEAREST)."""
    index = ((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64)
    return np.minimum(index, src - 1)


def as_rgb_array(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 from an array or PIL image (grey and RGBA are converted); ImageError if not."""
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image.convert("RGB"))
        except AttributeError:
            raise ImageError(
                f"Expected an image array or PIL image, got {type(image).__name__}."
            ) from None
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"Expected an (H, W, 3) RGB image array, got shape {image.shape}.")
    if image.dtype != np.uint8:
        raise ImageError(f"Expected an 8-bit (uint8) RGB image, got {image.dtype}.")
    return np.ascontiguousarray(image)


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` with its longer side at most `max_side` (antialiased bilinear), else unchanged."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.array(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _set_feature_sizes(predictor: Any, image_size: int) -> None:
    """SAM2ImagePredictor hard-codes 1024-px feature sizes; match the model's image_size."""
    predictor._bb_feat_sizes = [(image_size // s, image_size // s) for s in (4, 8, 16)]


def make_generator(handle: Sam2Handle, params: CandidateParams, progress: ProgressFn | None = None):
    """SAM2AutomaticMaskGenerator on the shared model with `params` (progress per prompt batch)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    class _Generator(SAM2AutomaticMaskGenerator):
        done = 0
        total = 0

        def _process_batch(self, *args, **kwargs):
            data = super()._process_batch(*args, **kwargs)
            self.done += 1
            if progress is not None:
                progress(self.done, self.total)
            return data

    generator = _Generator(
        handle.model,
        points_per_side=params.points_per_side,
        points_per_batch=params.points_per_batch,
        pred_iou_thresh=params.pred_iou_thresh,
        stability_score_thresh=params.stability_score_thresh,
        stability_score_offset=params.stability_score_offset,
        box_nms_thresh=params.box_nms_thresh,
        crop_n_layers=params.crop_n_layers,
        crop_nms_thresh=params.crop_nms_thresh,
        crop_n_points_downscale_factor=params.crop_n_points_downscale_factor,
        # Upstream's own small-region option needs the optional compiled extension and warns on
        # every batch without it; SST Desktop cleans regions itself (see _clean_small_regions).
        min_mask_region_area=0,
        output_mode="binary_mask",
        use_m2m=params.use_m2m,
        multimask_output=params.multimask_output,
    )
    _set_feature_sizes(generator.predictor, handle.image_size)
    return generator


def _batch_count(generator: Any, image_hw: tuple[int, int]) -> int:
    """How many prompt batches the generator will run for an image of this size."""
    from sam2.utils.amg import generate_crop_boxes

    _, layers = generate_crop_boxes(image_hw, generator.crop_n_layers, generator.crop_overlap_ratio)
    per = generator.points_per_batch
    return sum(math.ceil(len(generator.point_grids[layer]) / per) for layer in layers)


def generate_candidates(
    handle: Sam2Handle,
    image: Any,
    params: CandidateParams | dict | None = None,
    progress: ProgressFn | None = None,
) -> list[Candidate]:
    """Candidate masks of `image` (H, W, 3 uint8), largest area first, at the image's full size."""
    import torch

    if not isinstance(params, CandidateParams):
        params = CandidateParams.from_dict(params)
    image = as_rgb_array(image)
    full_hw = image.shape[:2]
    small = _downscale(image, params.max_side)
    small_hw = small.shape[:2]
    generator = make_generator(handle, params, progress=progress)
    generator.total = _batch_count(generator, small_hw)
    with handle.lock, torch.inference_mode(), handle.autocast():
        records = generator.generate(small)
    if params.min_mask_region_area > 0:
        # The setting is in full-image pixels; the masks here are at generator resolution.
        area_scale = (small_hw[0] * small_hw[1]) / (full_hw[0] * full_hw[1])
        records = _clean_small_regions(
            records,
            min_area=params.min_mask_region_area * area_scale,
            nms_thresh=params.box_nms_thresh,
        )
    candidates = [_to_candidate(r, small_hw=small_hw, full_hw=full_hw) for r in records]
    candidates = [c for c in candidates if c.area > 0]
    # Largest first: whole specimens before their parts, so small parts drawn later stay visible.
    candidates.sort(key=lambda c: -c.area)
    return candidates


def _to_candidate(record: dict, small_hw: tuple[int, int], full_hw: tuple[int, int]) -> Candidate:
    """A Candidate with area and bbox measured exactly on the full-size (upsampled) mask."""
    seg = np.asarray(record["segmentation"], dtype=bool)
    rows = _nearest_index(small_hw[0], full_hw[0])
    cols = _nearest_index(small_hw[1], full_hw[1])
    # Pixels of the full-size mask = sum over source pixels of (rows mapping to it x cols mapping to it).
    row_weight = np.bincount(rows, minlength=small_hw[0])
    col_weight = np.bincount(cols, minlength=small_hw[1])
    area = int(row_weight @ seg.astype(np.int64) @ col_weight)
    if area:
        row_hits = seg.any(axis=1)[rows]
        col_hits = seg.any(axis=0)[cols]
        y0, y1 = np.flatnonzero(row_hits)[[0, -1]]
        x0, x1 = np.flatnonzero(col_hits)[[0, -1]]
        bbox = (int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1))
    else:
        bbox = (0, 0, 0, 0)
    sx, sy = full_hw[1] / small_hw[1], full_hw[0] / small_hw[0]
    px, py = record["point_coords"][0]
    return Candidate(
        area=area,
        predicted_iou=float(record["predicted_iou"]),
        stability_score=float(record["stability_score"]),
        bbox=bbox,
        point=(float(px) * sx, float(py) * sy),
        small_mask=seg,
        full_size=(int(full_hw[0]), int(full_hw[1])),
    )


# ---------------------------------------------------------------------------------------------
# Small-region clean-up without OpenCV: connected components from horizontal runs of pixels.


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start column and end column (exclusive) of every horizontal run of True pixels."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a bool mask as runs: (rows, starts, ends, component of each run)."""
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return rows, starts, ends, np.zeros(0, dtype=np.int64)
    stride = mask.shape[1] + 2  # keys keep runs of different rows apart
    start_key, end_key = rows * stride + starts, rows * stride + ends
    # Runs a (row r-1) and b (row r) touch, diagonals included, when a.start <= b.end and b.start <= a.end.
    lo = np.searchsorted(end_key, (rows - 1) * stride + starts, side="left")
    hi = np.searchsorted(start_key, (rows - 1) * stride + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), counts)
    offsets = np.arange(len(b)) - np.repeat(np.cumsum(counts) - counts, counts)
    a = np.repeat(lo, counts) + offsets
    labels = np.arange(n)
    while len(a):
        # Hook the larger root of every touching pair onto the smaller, then compress paths.
        la, lb = labels[a], labels[b]
        low = np.minimum(la, lb)
        new = labels.copy()
        np.minimum.at(new, la, low)
        np.minimum.at(new, lb, low)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            break
        labels = new
    _, component = np.unique(labels, return_inverse=True)
    return rows, starts, ends, component.reshape(-1)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") smaller than `min_area`; (mask, changed)."""
    fill = mode == "holes"
    working = ~mask if fill else mask
    rows, starts, ends, component = connected_components(working)
    if len(rows) == 0:
        return mask, False
    sizes = np.bincount(component, weights=ends - starts)
    small = sizes < min_area
    if not fill and small.all():
        small[np.argmax(sizes)] = False  # never remove every island: keep the largest
    if not small.any():
        return mask, False
    pick = small[component]
    delta = np.zeros((mask.shape[0], mask.shape[1] + 1), dtype=np.int32)
    np.add.at(delta, (rows[pick], starts[pick]), 1)
    np.add.at(delta, (rows[pick], ends[pick]), -1)
    paint = np.cumsum(delta, axis=1)[:, :-1] > 0
    return (mask | paint) if fill else (mask & ~paint), True


def _clean_small_regions(records: list[dict], min_area: float, nms_thresh: float) -> list[dict]:
    """Fill small holes and drop small islands in each mask, then drop new duplicates by box NMS."""
    import torch
    from torchvision.ops.boxes import batched_nms

    if not records:
        return records
    cleaned, boxes, unchanged = [], [], []
    for record in records:
        mask = np.asarray(record["segmentation"], dtype=bool)
        mask, changed_holes = remove_small_regions(mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        cleaned.append(mask)
        unchanged.append(0.0 if (changed_holes or changed_islands) else 1.0)
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])
    # Like SAM's own post-processing: among duplicates prefer masks that needed no clean-up.
    keep = batched_nms(
        torch.as_tensor(boxes, dtype=torch.float32),
        torch.as_tensor(unchanged),
        torch.zeros(len(boxes), dtype=torch.int64),
        iou_threshold=nms_thresh,
    ).tolist()
    out = []
    for i in sorted(keep):
        record = dict(records[i])
        record["segmentation"] = cleaned[i]
        out.append(record)
    return out


# ---------------------------------------------------------------------------------------------
# Refinement of one mask from clicks and boxes on an image whose embedding is cached.


@dataclass
class RefineResult:
    """One refined mask at full size, its predicted IoU, and logits to feed into the next click."""

    mask: np.ndarray  # (H, W) bool
    score: float
    low_res_logits: np.ndarray  # (1, image_size // 4, image_size // 4) float32


class Refiner:
    """Point/box prompting with SAM2's image predictor; image embeddings cached per image key."""

    def __init__(self, handle: Sam2Handle, max_images: int = 4) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.handle = handle
        self.max_images = max(1, int(max_images))
        self._predictor = SAM2ImagePredictor(handle.model)
        _set_feature_sizes(self._predictor, handle.image_size)
        self._cache: OrderedDict[Any, tuple[dict, tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self.encodings = 0  # images encoded so far (each costs one image-encoder pass)

    def has_image(self, key: Any) -> bool:
        """Whether the embedding of `key` is cached."""
        with self._lock:
            return key in self._cache

    def set_image(self, key: Any, image: Any) -> None:
        """Encode `image` under `key` unless it is cached already (LRU of `max_images`)."""
        import torch

        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return
        image = as_rgb_array(image)
        with self.handle.lock, torch.inference_mode(), self.handle.autocast():
            self._predictor.set_image(image)
            entry = (self._predictor._features, tuple(self._predictor._orig_hw[0]))
            self._predictor.reset_predictor()
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            self.encodings += 1
            while len(self._cache) > self.max_images:
                self._cache.popitem(last=False)

    def forget(self, key: Any) -> None:
        """Drop the cached embedding of `key` (after its image changed on disk)."""
        with self._lock:
            self._cache.pop(key, None)

    def predict(
        self,
        key: Any,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool | None = None,
    ) -> RefineResult:
        """Best mask for clicks (x, y full-image pixels; label 1 = object, 0 = not), a box
        (x0, y0, x1, y1) and/or a previous mask (low-res logits or a full-size bool mask)."""
        import torch

        with self._lock:
            if key not in self._cache:
                raise UserError(f"No image set for {key!r}: call set_image first.")
            features, orig_hw = self._cache[key]
            self._cache.move_to_end(key)
        coords, point_labels = _check_points(points, labels)
        box_array = _check_box(box)
        if coords is None and box_array is None and mask_input is None:
            raise UserError("Refinement needs at least one click, a box, or a mask to start from.")
        logits_in = self._mask_input(mask_input, orig_hw)
        if multimask is None:
            # One click is ambiguous (part or whole?): let SAM propose three and keep the best.
            multimask = box_array is None and logits_in is None and len(coords) == 1
        with self.handle.lock, torch.inference_mode(), self.handle.autocast():
            predictor = self._predictor
            predictor._features = features
            predictor._orig_hw = [orig_hw]
            predictor._is_image_set = True
            predictor._is_batch = False
            try:
                masks, scores, low_res = predictor.predict(
                    point_coords=coords,
                    point_labels=point_labels,
                    box=box_array,
                    mask_input=logits_in,
                    multimask_output=bool(multimask),
                )
            finally:
                predictor.reset_predictor()
        best = int(np.argmax(scores))
        return RefineResult(
            mask=masks[best] > 0,
            score=float(scores[best]),
            low_res_logits=low_res[best][None].astype(np.float32),
        )

    def _mask_input(
        self, mask_input: np.ndarray | None, orig_hw: tuple[int, int]
    ) -> np.ndarray | None:
        """Low-res logits (1, s/4, s/4) from previous logits or from a full-size bool mask."""
        if mask_input is None:
            return None
        low = self.handle.image_size // 4
        array = np.asarray(mask_input)
        if array.dtype == bool or (array.ndim == 2 and array.shape == orig_hw):
            return bool_mask_to_logits(array.astype(bool), low)
        array = array.astype(np.float32).reshape(-1, *array.shape[-2:])
        if array.shape != (1, low, low):
            raise UserError(
                f"mask_input has shape {np.asarray(mask_input).shape}: pass the previous result's "
                f"low_res_logits (1, {low}, {low}) or a bool mask of the image's size {orig_hw}."
            )
        return array


def bool_mask_to_logits(mask: np.ndarray, size: int, strength: float = 10.0) -> np.ndarray:
    """A full-size bool mask as SAM mask-prompt logits (1, size, size): +strength in, -strength out."""
    from PIL import Image

    # SAM2 resizes images to a square without padding, so the mask is squashed the same way.
    coverage = Image.fromarray(mask.astype(np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return ((np.asarray(coverage, dtype=np.float32) * 2.0 - 1.0) * strength)[None]


def _check_points(
    points: Sequence[Sequence[float]] | None, labels: Sequence[int] | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Points as an (N, 2) float array and labels as (N,) ints; UserError on a mismatch."""
    if not points:
        return None, None
    coords = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if labels is None:
        labels = [1] * len(coords)
    label_array = np.asarray(labels, dtype=np.int32).reshape(-1)
    if len(label_array) != len(coords):
        raise UserError(
            f"Got {len(coords)} clicks but {len(label_array)} labels: give one label per click."
        )
    if not np.isin(label_array, (0, 1)).all():
        raise UserError("Click labels must be 1 (object) or 0 (background).")
    return coords, label_array


def _check_box(box: Sequence[float] | None) -> np.ndarray | None:
    """A box as a (4,) float array x0, y0, x1, y1 with corners ordered."""
    if box is None:
        return None
    array = np.asarray(box, dtype=np.float32).reshape(-1)
    if array.shape != (4,):
        raise UserError(f"A box needs 4 numbers (x0, y0, x1, y1), got {len(array)}.")
    x0, y0, x1, y1 = array
    return np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], dtype=np.float32)
