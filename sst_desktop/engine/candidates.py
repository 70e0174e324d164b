"""Candidate masks for a reference image (SAM2's automatic mask generator) and click refinement.

Generation runs prompt batch by prompt batch (see mask_generator) and can be followed as it goes:
`stream_candidates` yields an update per batch whose provisional candidates a screen can show.
Generation and click refinement share one image embedding per image (the Refiner's cache), and a
click waits at most for the prompt batch in progress, not for the whole generation.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sst_desktop.data import masks
from sst_desktop.data.candidate_settings import CandidateParams
from sst_desktop.engine.mask_generator import GeneratedMask, MaskGenerator, Timings
from sst_desktop.engine.mask_regions import (  # noqa: F401  (re-exported for callers and tests)
    clean_small_regions,
    connected_components,
    remove_small_regions,
)
from sst_desktop.engine.sam2_model import Sam2Handle, inference
from sst_desktop.errors import ImageError, UserError

__all__ = ["Candidate", "CandidateParams", "CandidateUpdate", "Refiner", "generate_candidates"]

# progress(batches_done, batches_total); may raise to cancel the generation.
ProgressFn = Callable[[int, int], None]


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
    uid: int = -1  # the generator's id of this mask: the same in provisional and final results

    @property
    def mask(self) -> np.ndarray:
        """The (H, W) bool mask at the image's full size (nearest-neighbour upsampling)."""
        return masks.resize_nearest(
            self.small_mask, width=self.full_size[1], height=self.full_size[0]
        )


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


class _Scale:
    """Maps between the generator image and the full-size image (nearest neighbour)."""

    def __init__(self, small_hw: tuple[int, int], full_hw: tuple[int, int]) -> None:
        self.small_hw, self.full_hw = small_hw, full_hw
        self.rows = masks.nearest_indices(small_hw[0], full_hw[0])
        self.cols = masks.nearest_indices(small_hw[1], full_hw[1])
        # Full-size pixels per source pixel: the area of a full-size mask without building it.
        self.row_weight = np.bincount(self.rows, minlength=small_hw[0])
        self.col_weight = np.bincount(self.cols, minlength=small_hw[1])
        self.same = small_hw == full_hw


def _to_candidate(found: GeneratedMask, seg: np.ndarray, scale: _Scale) -> Candidate:
    """A Candidate with area and bbox measured exactly on the full-size (upsampled) mask."""
    rows_any, cols_any = seg.any(axis=1), seg.any(axis=0)
    area, bbox = 0, (0, 0, 0, 0)
    if rows_any.any():
        y0, y1 = np.flatnonzero(rows_any)[[0, -1]]
        x0, x1 = np.flatnonzero(cols_any)[[0, -1]]
        crop = seg[y0 : y1 + 1, x0 : x1 + 1]
        if scale.same:
            area = int(np.count_nonzero(crop))
        else:
            per_row = crop.astype(np.uint8) @ scale.col_weight[x0 : x1 + 1]
            area = int(per_row @ scale.row_weight[y0 : y1 + 1])
        full_rows = np.flatnonzero(rows_any[scale.rows])
        full_cols = np.flatnonzero(cols_any[scale.cols])
        if len(full_rows) and len(full_cols):
            fy0, fy1, fx0, fx1 = full_rows[0], full_rows[-1], full_cols[0], full_cols[-1]
            bbox = (int(fx0), int(fy0), int(fx1 - fx0 + 1), int(fy1 - fy0 + 1))
    (sh, sw), (fh, fw) = scale.small_hw, scale.full_hw
    px, py = found.point
    return Candidate(
        area=area,
        predicted_iou=found.predicted_iou,
        stability_score=found.stability_score,
        bbox=bbox,
        point=(float(px) * (fw / sw), float(py) * (fh / sh)),
        small_mask=seg,
        full_size=(int(fh), int(fw)),
        uid=found.uid,
    )


class CandidateUpdate:
    """Where a generation stands after one prompt batch; `candidates()` are the masks so far."""

    def __init__(self, stream: _Stream, done: int, total: int) -> None:
        self._stream = stream
        self.done = done
        self.total = total
        self.elapsed = time.perf_counter() - stream.started

    def candidates(self) -> list[Candidate]:
        """Masks that survive duplicate removal so far, largest first (before region clean-up)."""
        return self._stream.provisional()


class _Stream:
    """One generation on one image: the generator plus Candidates converted once per mask."""

    def __init__(self, generator: MaskGenerator, small_hw, full_hw) -> None:
        self.generator = generator
        self.small_hw, self.full_hw = small_hw, full_hw
        self.scale = _Scale(small_hw, full_hw)
        self.started = time.perf_counter()
        self._converted: dict[int, Candidate] = {}

    def convert(self, found: GeneratedMask) -> Candidate:
        """The Candidate of one generated mask (cached: provisional lists repeat masks)."""
        cand = self._converted.get(found.uid)
        if cand is None:
            cand = _to_candidate(found, found.mask(self.small_hw), self.scale)
            self._converted[found.uid] = cand
        return cand

    def provisional(self) -> list[Candidate]:
        """Candidates so far, without region clean-up, largest first."""
        found = [self.convert(m) for m in self.generator.result()]
        return _sorted([c for c in found if c.area > 0])


def _sorted(found: list[Candidate]) -> list[Candidate]:
    """Largest first: whole specimens before their parts, so parts drawn later stay visible."""
    return sorted(found, key=lambda c: -c.area)  # stable: ties keep the generator's order


def stream_candidates(
    handle: Sam2Handle,
    image: Any,
    params: CandidateParams | dict | None = None,
    refiner: Refiner | None = None,
    key: Any = None,
    timings: Timings | None = None,
) -> Iterator[CandidateUpdate | list[Candidate]]:
    """Generate candidates of `image`, yielding a CandidateUpdate after every prompt batch and
    the final list (largest area first, at the image's full size) last.

    With a `refiner` and image `key`, the whole-image embedding comes from (or goes into) the
    refiner's cache, so clicks and generation encode the image once.
    """
    if not isinstance(params, CandidateParams):
        params = CandidateParams.from_dict(params)
    image = as_rgb_array(image)
    full_hw = image.shape[:2]
    small = _downscale(image, params.max_side)
    small_hw = small.shape[:2]
    embedding = None
    if refiner is not None and key is not None:

        def embedding(encoded: np.ndarray) -> dict:
            return refiner.features_for(key, encoded, full_hw=full_hw)

    generator = MaskGenerator(
        handle, params, embedding=embedding, lock=lambda: _generation_step(handle)
    )
    if timings is not None:
        generator.timings = timings
    stream = _Stream(generator, small_hw, full_hw)
    try:
        for done, total in generator.run(small):
            yield CandidateUpdate(stream, done, total)
    finally:
        generator.close()
    start = generator.timings.clock()
    found = generator.result()
    if params.min_mask_region_area > 0:
        # The setting is in full-image pixels; the masks here are at generator resolution.
        area_scale = (small_hw[0] * small_hw[1]) / (full_hw[0] * full_hw[1])
        keep, cleaned = clean_small_regions(
            [m.mask(small_hw) for m in found],
            min_area=params.min_mask_region_area * area_scale,
            nms_thresh=params.box_nms_thresh,
        )
        candidates = [_to_candidate(found[i], cleaned[i], stream.scale) for i in keep]
    else:
        candidates = [stream.convert(m) for m in found]  # shown ones are converted already
    generator.timings.filtering += generator.timings.clock() - start
    yield _sorted([c for c in candidates if c.area > 0])


def generate_candidates(
    handle: Sam2Handle,
    image: Any,
    params: CandidateParams | dict | None = None,
    progress: ProgressFn | None = None,
    refiner: Refiner | None = None,
    key: Any = None,
    timings: Timings | None = None,
) -> list[Candidate]:
    """Candidate masks of `image` (H, W, 3 uint8), largest area first, at the image's full size.

    `progress(done, total)` is called after each prompt batch; raising from it cancels.
    """
    for item in stream_candidates(
        handle, image, params=params, refiner=refiner, key=key, timings=timings
    ):
        if isinstance(item, CandidateUpdate):
            if progress is not None:
                progress(item.done, item.total)
        else:
            return item
    raise AssertionError("stream_candidates ends with the final list")


# ---------------------------------------------------------------------------------------------
# Sharing the model between a generation and clicks.


class _ClickGate:
    """Clicks waiting for a model: a generation lets them go first between two prompt batches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting = 0

    @contextlib.contextmanager
    def click(self) -> Iterator[None]:
        """Mark a click as waiting for (then using) the model."""
        with self._cond:
            self._waiting += 1
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1
                self._cond.notify_all()

    def let_clicks_pass(self) -> None:
        """Block until no click is waiting (a click never waits on this, so no deadlock)."""
        with self._cond:
            self._cond.wait_for(lambda: self._waiting == 0)


_gates: dict[int, _ClickGate] = {}
_gates_lock = threading.Lock()


def _gate(handle: Sam2Handle) -> _ClickGate:
    """The click gate of one loaded model."""
    with _gates_lock:
        return _gates.setdefault(id(handle), _ClickGate())


@contextlib.contextmanager
def _generation_step(handle: Sam2Handle) -> Iterator[None]:
    """The model for one generation step, after any waiting click has had its turn."""
    _gate(handle).let_clicks_pass()
    with inference(handle):
        yield


@contextlib.contextmanager
def _click_step(handle: Sam2Handle) -> Iterator[None]:
    """The model for one click, ahead of a running generation's next batch."""
    with _gate(handle).click(), inference(handle):
        yield


# ---------------------------------------------------------------------------------------------
# Refinement of one mask from clicks and boxes on an image whose embedding is cached.


@dataclass
class RefineResult:
    """One refined mask at full size, its predicted IoU, and logits to feed into the next click."""

    mask: np.ndarray  # (H, W) bool
    score: float
    low_res_logits: np.ndarray  # (1, image_size // 4, image_size // 4) float32


@dataclass
class _Embedding:
    """Cached image features, the full image's size, and the size that was encoded."""

    features: dict = field(repr=False)
    orig_hw: tuple[int, int]
    encoded_hw: tuple[int, int]


class Refiner:
    """Point/box prompting with SAM2's image predictor; image embeddings cached per image key.

    Images are encoded with their longer side at most `max_side` (the candidate generator's
    default), so a generation and clicks on the same image share one embedding.
    """

    def __init__(self, handle: Sam2Handle, max_images: int = 4, max_side: int = 2048) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.handle = handle
        self.max_images = max(1, int(max_images))
        self.max_side = int(max_side)
        self._predictor = SAM2ImagePredictor(handle.model)
        _set_feature_sizes(self._predictor, handle.image_size)
        self._cache: OrderedDict[Any, _Embedding] = OrderedDict()
        self._pending: dict[Any, threading.Event] = {}  # keys being encoded right now
        self._lock = threading.Lock()
        self.encodings = 0  # images encoded so far (each costs one image-encoder pass)

    def has_image(self, key: Any) -> bool:
        """Whether the embedding of `key` is cached."""
        with self._lock:
            return key in self._cache

    def set_image(self, key: Any, image: Any, max_side: int | None = None) -> None:
        """Encode `image` under `key` unless it is cached already (LRU of `max_images`).

        `max_side`: the working size to encode at (default the Refiner's); pass the candidate
        settings' so a later generation finds the same embedding.
        """
        image = as_rgb_array(image)
        encoded = _downscale(image, int(max_side or self.max_side))
        self._embedding(key, encoded, full_hw=image.shape[:2], any_size=True)

    def features_for(self, key: Any, encoded: np.ndarray, full_hw: tuple[int, int]) -> dict:
        """Features of `encoded` (the image of `key`, maybe downscaled), from the cache or new."""
        return self._embedding(key, encoded, full_hw=full_hw, any_size=False).features

    def _embedding(
        self, key: Any, encoded: np.ndarray, full_hw: tuple[int, int], any_size: bool
    ) -> _Embedding:
        """The cached embedding of `key` (waiting for an encode in progress), else a new one."""
        encoded_hw = tuple(encoded.shape[:2])
        while True:
            with self._lock:
                entry = self._cache.get(key)
                if entry is not None and (any_size or entry.encoded_hw == encoded_hw):
                    self._cache.move_to_end(key)
                    return entry
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = threading.Event()
                    break
            pending.wait()  # another thread is encoding this image: use its result
        try:
            with _click_step(self.handle):
                self._predictor.set_image(encoded)
                entry = _Embedding(self._predictor._features, tuple(full_hw), encoded_hw)
                self._predictor.reset_predictor()
            with self._lock:
                self._cache[key] = entry
                self._cache.move_to_end(key)
                self.encodings += 1
                while len(self._cache) > self.max_images:
                    self._cache.popitem(last=False)
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.set()
        return entry

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
        with self._lock:
            if key not in self._cache:
                raise UserError(f"No image set for {key!r}: call set_image first.")
            entry = self._cache[key]
            self._cache.move_to_end(key)
        orig_hw = entry.orig_hw
        coords, point_labels = _check_points(points, labels)
        box_array = _check_box(box)
        if coords is None and box_array is None and mask_input is None:
            raise UserError("Refinement needs at least one click, a box, or a mask to start from.")
        logits_in = self._mask_input(mask_input, orig_hw)
        if multimask is None:
            # One click is ambiguous (part or whole?): let SAM propose three and keep the best.
            multimask = box_array is None and logits_in is None and len(coords) == 1
        with _click_step(self.handle):
            predictor = self._predictor
            predictor._features = entry.features
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
