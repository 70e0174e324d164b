"""Reference-conditioned SAM2 propagation: the SST method, equivalent to upstream's pseudo-video.

Definition (the SST method as upstream computes it): the output for a target t of a group
with references r_0..r_{k-1} is what upstream ``SAM2VideoPredictor`` returns for frame k of the
pseudo-video [r_0, ..., r_{k-1}, t] after ``add_new_mask`` of every object ID on every reference
(an empty mask where the ID is absent) and ``propagate_in_video``. The references' memory does not
depend on the target, so it is encoded once per group (``build_reference_memory``); each target
then attends to that memory only, so results do not depend on target order or on other targets,
and memory stays flat whatever the group size. Targets are batched as (targets x objects) rows,
which only reorders floating-point work (no op mixes rows).

ID masks: at each pixel the object with the highest logit wins among objects whose logit is > 0
(ties go to the lowest ID); elsewhere 0. This is what upstream's ``tools/vos_inference.py`` writes
for a combined PNG (``non_overlap_masks=True`` keeps the arg-max object, then per-object masks
``logit > 0`` are painted).

torch and sam2 are imported inside functions: the GUI imports this module at startup.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sst_desktop.data.images import ModelInput
from sst_desktop.engine.postprocess import (
    PreparedTarget,
    PropagationResult,
    StageTimer,
    finish_batch,
    release_scratch,
    timed,
)
from sst_desktop.engine.postprocess import (
    compose_id_mask as compose_id_mask,  # the ID rule above: part of this module's interface
)
from sst_desktop.engine.sam2_model import inference
from sst_desktop.errors import ImageError, MaskError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# ImageNet statistics used by upstream's frame loader (sam2.utils.misc.load_video_frames).
_IMG_MEAN = (0.485, 0.456, 0.406)
_IMG_STD = (0.229, 0.224, 0.225)


@dataclass
class ReferenceMemory:
    """SAM2 memory of a group's references: one entry per reference, each with rows = objects."""

    obj_ids: list[int]
    num_refs: int
    image_size: int
    # Per reference: maskmem_features (O, C, h, w) bfloat16, maskmem_pos_enc (list of (1, C, h, w)),
    # obj_ptr (O, C), object_score_logits (O, 1); all on the model's device.
    cond_outputs: list[dict[str, Any]] = field(repr=False)

    @property
    def num_objects(self) -> int:
        """Number of SAM2 objects (= object IDs) in the memory."""
        return len(self.obj_ids)


# --------------------------------------------------------------------------- preprocessing


def _as_rgb_uint8(image: np.ndarray, what: str) -> np.ndarray:
    """Validate an image array and return it as (H, W, 3) uint8 RGB."""
    from PIL import Image

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = getattr(image, "dtype", type(image).__name__)
        raise ImageError(
            f"{what}: expected a uint8 image array, got {kind}; load it with images.load_image_array"
        )
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        # Same conversion as upstream's loader (PIL convert("RGB")).
        return np.asarray(
            Image.fromarray(
                image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image
            ).convert("RGB")
        )
    raise ImageError(f"{what}: expected an (H, W, 3) image array, got shape {image.shape}")


def preprocess_image(image: np.ndarray, image_size: int) -> torch.Tensor:
    """Model input (3, S, S) float32 exactly as upstream's frame loader builds it from these pixels."""
    from PIL import Image

    rgb = _as_rgb_uint8(image, what="image")
    # Upstream: PIL resize to a square with the default filter (bicubic), /255 in float64, stored
    # in a float32 tensor, then normalised in float32.
    return _normalised(np.asarray(Image.fromarray(rgb).resize((image_size, image_size))))


def _model_tensor(image: np.ndarray | ModelInput, image_size: int, what: str) -> torch.Tensor:
    """The model input of an RGB array, or of a `ModelInput` already resized to the model size."""
    if not isinstance(image, ModelInput):
        return preprocess_image(image, image_size)
    if image.resized.shape != (image_size, image_size, 3):
        raise ValueError(
            f"{what}: model input is {image.resized.shape}, expected ({image_size}, {image_size}, 3)"
        )
    return _normalised(image.resized)


def _normalised(resized: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 already at the model size -> the normalised (3, S, S) float32 model input."""
    import torch

    tensor = torch.from_numpy((resized / 255.0).astype(np.float32)).permute(2, 0, 1)
    mean = torch.tensor(_IMG_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(_IMG_STD, dtype=torch.float32)[:, None, None]
    return ((tensor - mean) / std).contiguous()


def _mask_inputs(
    idmask: np.ndarray, obj_ids: Sequence[int], image_size: int, device
) -> torch.Tensor:
    """Per-object binary mask inputs (O, 1, S, S) as upstream ``add_new_mask`` builds them."""
    import torch
    import torch.nn.functional as F

    ids = torch.as_tensor(np.asarray(obj_ids, dtype=np.int64))
    per_obj = torch.from_numpy(idmask.astype(np.int64))[None] == ids[:, None, None]
    masks = per_obj[:, None].float().to(device)
    if masks.shape[-2:] != (image_size, image_size):
        masks = F.interpolate(
            masks,
            size=(image_size, image_size),
            align_corners=False,
            mode="bilinear",
            antialias=True,
        )
        masks = (masks >= 0.5).float()
    return masks


# --------------------------------------------------------------------------- model helpers


def _check_model(model) -> None:
    """The batched memory encode is only exact while objects are encoded independently."""
    if getattr(model, "non_overlap_masks_for_mem_enc", False):
        raise AssertionError(
            "SAM2 model has non_overlap_masks_for_mem_enc=True: reference memory would mix objects; "
            "build it from the SAM2.1/2.0 configs, where it is False"
        )


def _backbone_features(model, images: torch.Tensor, repeats: int):
    """Image features of a batch (N, 3, S, S), each image repeated `repeats` times (row = n * repeats + o)."""
    backbone_out = model.forward_image(images)
    expanded = {
        "backbone_fpn": [_repeat_rows(x, repeats) for x in backbone_out["backbone_fpn"]],
        "vision_pos_enc": [_repeat_rows(x, repeats) for x in backbone_out["vision_pos_enc"]],
    }
    _, feats, pos, sizes = model._prepare_backbone_features(expanded)
    return feats, pos, sizes


def _repeat_rows(x: torch.Tensor, repeats: int) -> torch.Tensor:
    """Repeat each batch row `repeats` times (a view when there is one row, as upstream expands)."""
    if repeats == 1:
        return x
    if x.shape[0] == 1:
        return x.expand(repeats, *x.shape[1:])
    return x.repeat_interleave(repeats, dim=0)


def _track_step(
    model,
    frame_idx: int,
    features: tuple,
    mask_inputs: torch.Tensor | None,
    cond_outputs: dict[int, dict[str, Any]],
    num_frames: int,
) -> dict[str, Any]:
    """One frame of upstream's pseudo-video through SAM2's tracking step, memory encoder skipped.

    A reference (`mask_inputs` given) is an initial conditioning frame whose mask is its output;
    a target (no mask) attends to `cond_outputs`, the references' memory. The memory encoder is
    never run here: a reference's memory is encoded from its hole-filled mask afterwards, and a
    target's own memory never feeds its output.
    """
    feats, pos, sizes = features
    return model.track_step(
        frame_idx=frame_idx,
        is_init_cond_frame=mask_inputs is not None,
        current_vision_feats=feats,
        current_vision_pos_embeds=pos,
        feat_sizes=sizes,
        point_inputs=None,
        mask_inputs=mask_inputs,
        output_dict={"cond_frame_outputs": cond_outputs, "non_cond_frame_outputs": {}},
        num_frames=num_frames,
        track_in_reverse=False,
        run_mem_encoder=False,
    )


def _fill_holes(model, pred_masks: torch.Tensor) -> torch.Tensor:
    """Upstream's optional hole filling of low-res mask scores (a no-op when fill_hole_area is 0)."""
    area = getattr(model, "fill_hole_area", 0)
    if area and area > 0:
        from sam2.utils.misc import fill_holes_in_mask_scores

        return fill_holes_in_mask_scores(pred_masks, area)
    return pred_masks


# --------------------------------------------------------------------------- reference memory


def build_reference_memory(
    handle,
    references: Sequence[tuple[np.ndarray, np.ndarray]],
    names: Sequence[str] | None = None,
) -> ReferenceMemory:
    """Encode a group's references (image, ID mask) into SAM2 memory, once per group.

    Object IDs = the sorted union of non-zero IDs; an ID absent from a reference is encoded as an
    empty mask there ("object absent"), exactly as upstream ``add_new_mask`` with an empty mask.
    `names` (e.g. the references' primary keys) only serve error messages.
    """
    import torch
    import torch.nn.functional as F

    if len(references) == 0:
        raise MaskError(
            "no reference masks in this group; label at least one reference image first"
        )
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(len(references))]
    if len(names) != len(references):
        raise ValueError(f"{len(names)} names given for {len(references)} references")
    checked: list[tuple[np.ndarray, np.ndarray]] = []
    all_ids: set[int] = set()
    for name, (image, idmask) in zip(names, references, strict=True):
        if isinstance(image, ModelInput):  # already at the model size, with its full size
            rgb, shape = image, (image.height, image.width)
        else:
            rgb = _as_rgb_uint8(image, what=f"reference {name}")
            shape = rgb.shape[:2]
        mask = np.asarray(idmask)
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise MaskError(
                f"reference {name}: mask must be a 2-D uint8 ID mask, got {mask.dtype} {mask.shape}"
            )
        if mask.shape != shape:
            raise MaskError(
                f"reference {name}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{shape[1]}x{shape[0]} (after EXIF rotation); redraw the reference mask"
            )
        ids = np.unique(mask)
        ids = ids[ids != 0]
        if ids.size == 0:
            raise MaskError(
                f"reference {name}: the mask is empty; label at least one object or remove the reference"
            )
        all_ids.update(int(i) for i in ids)
        checked.append((rgb, mask))

    obj_ids = sorted(all_ids)
    model = handle.model
    _check_model(model)
    size = int(handle.image_size)
    device = handle.device
    num_frames = len(checked) + 1  # the pseudo-video: references then one target
    cond_outputs: list[dict[str, Any]] = []
    with inference(handle):
        for frame_idx, (rgb, mask) in enumerate(checked):
            img = _model_tensor(rgb, size, what=f"reference {names[frame_idx]}").to(device)[None]
            feats, pos, sizes = _backbone_features(model, img, repeats=len(obj_ids))
            mask_inputs = _mask_inputs(mask, obj_ids, size, device)
            # Mask given: SAM2 outputs the mask itself (use_mask_input_as_output_without_sam) and
            # an object pointer from the decoder; no memory attention, so order does not matter.
            out = _track_step(
                model,
                frame_idx=frame_idx,
                features=(feats, pos, sizes),
                mask_inputs=mask_inputs,
                cond_outputs={},
                num_frames=num_frames,
            )
            # Memory comes from the (hole-filled) low-res mask upsampled to the model size, as in
            # upstream's propagate_in_video_preflight.
            low_res = _fill_holes(model, out["pred_masks"])
            high_res = F.interpolate(
                low_res.to(device), size=(size, size), mode="bilinear", align_corners=False
            )
            maskmem_features, maskmem_pos_enc = model._encode_new_memory(
                current_vision_feats=feats,
                feat_sizes=sizes,
                pred_masks_high_res=high_res,
                object_score_logits=out["object_score_logits"],
                is_mask_from_pts=True,
            )
            cond_outputs.append(
                {
                    # Upstream stores memory features in bfloat16; the rounding changes results.
                    "maskmem_features": maskmem_features.to(torch.bfloat16),
                    "maskmem_pos_enc": [x[0:1].clone() for x in maskmem_pos_enc],
                    "obj_ptr": out["obj_ptr"],
                    "object_score_logits": out["object_score_logits"],
                }
            )
    return ReferenceMemory(
        obj_ids=obj_ids, num_refs=len(checked), image_size=size, cond_outputs=cond_outputs
    )


def _tiled_cond_outputs(memory: ReferenceMemory, num_targets: int) -> dict[int, dict[str, Any]]:
    """The references as upstream's cond_frame_outputs, tiled over a batch (row = t * O + o)."""
    rows = num_targets * memory.num_objects
    tiled = {}
    for frame_idx, ref in enumerate(memory.cond_outputs):
        tiled[frame_idx] = {
            "maskmem_features": ref["maskmem_features"].repeat(num_targets, 1, 1, 1),
            "maskmem_pos_enc": [x.expand(rows, -1, -1, -1) for x in ref["maskmem_pos_enc"]],
            "obj_ptr": ref["obj_ptr"].repeat(num_targets, 1),
            "object_score_logits": ref["object_score_logits"].repeat(num_targets, 1),
        }
    return tiled


def _predict_batch(
    handle, memory: ReferenceMemory, images: torch.Tensor, timings: StageTimer | None = None
):
    """Low-res mask logits (T, O, 1, s, s) and object scores (T, O) for a batch of targets.

    On CPU they are returned as they are (the consumer thread resizes them, overlapping the next
    batch); on an accelerator they stay there, where resizing is cheap and only masks travel back.
    """
    model = handle.model
    num_t, num_o = images.shape[0], memory.num_objects
    k = memory.num_refs
    with inference(handle), timed(timings, "model", count=num_t):
        out = _track_step(
            model,
            frame_idx=k,
            features=_backbone_features(model, images.to(handle.device), repeats=num_o),
            mask_inputs=None,
            cond_outputs=_tiled_cond_outputs(memory, num_t),
            num_frames=k + 1,
        )
        low_res = _fill_holes(model, out["pred_masks"]).float()
        scores = out["object_score_logits"].float()
        low_res = low_res.reshape(num_t, num_o, *low_res.shape[1:])
        scores = scores.reshape(num_t, num_o).cpu()
    return low_res, scores


# --------------------------------------------------------------------------- propagation


def _prepare(
    key: Any, source: Any, image_size: int, timings: StageTimer | None = None
) -> PreparedTarget:
    """Load (if a callable) and preprocess one target; errors become the target's result.

    A source may give the full image array or a `ModelInput` already resized to the model size
    (the run's readers do that: no full-size array is made for a target).
    """
    with timed(timings, "read"):
        try:
            image = source() if callable(source) else source
            if isinstance(image, ModelInput):
                height, width = image.height, image.width
            else:
                image = _as_rgb_uint8(image, what=f"target {key}")
                height, width = image.shape[:2]
            return PreparedTarget(
                key, height, width, _model_tensor(image, image_size, f"target {key}")
            )
        except Exception as exc:  # a bad frame never kills a run
            return PreparedTarget(key, error=exc)


_DONE = object()


class _Crash:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _model_batches(
    handle,
    memory: ReferenceMemory,
    targets,
    batch_size: int,
    prefetch: int,
    loader_threads: int,
    stop: threading.Event,
    return_logits: bool,
    timings: StageTimer | None = None,
):
    """Yield (batch of PreparedTarget, the good ones, low-res logits or finished results, scores).

    Upcoming targets load in a pool while the model works.
    """
    pending: deque[Future] = deque()
    source = iter(targets)
    exhausted = False
    with ThreadPoolExecutor(
        max_workers=max(1, loader_threads), thread_name_prefix="sst-load"
    ) as pool:
        try:
            while not stop.is_set():
                # Keep the next batches loading while the model works (bounded: flat memory).
                while not exhausted and len(pending) < prefetch + batch_size:
                    try:
                        key, src = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(pool.submit(_prepare, key, src, memory.image_size, timings))
                if not pending:
                    return
                batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
                good = [p for p in batch if p.error is None]
                low_res = scores = None
                if good:
                    import torch

                    images = torch.stack([p.tensor for p in good])
                    low_res, scores = _predict_batch(handle, memory, images, timings)
                    scores = scores.tolist()  # one conversion per batch, not per target
                    if low_res.device.type != "cpu":
                        # Resize on the accelerator (as upstream does) and send back only masks.
                        low_res = finish_batch(
                            good, low_res, scores, memory.obj_ids, return_logits, timings
                        )
                yield batch, good, low_res, scores
        finally:
            for fut in pending:
                fut.cancel()


def _lock_held_here(lock) -> bool:
    """True when the calling thread owns `lock` (an RLock): a model thread would then deadlock."""
    is_owned = getattr(lock, "_is_owned", None)
    return bool(is_owned and is_owned())


def _threaded(batches: Iterator, stop: threading.Event) -> Iterator:
    """Run `batches` in a model thread, handing its items over a small bounded queue."""
    results: queue.Queue = queue.Queue(maxsize=2)  # batches waiting for the consumer

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in batches:
                if not put(item):
                    break
            put(_DONE)
        except BaseException as exc:  # hand any failure to the consumer thread
            put(_Crash(exc))
        finally:
            batches.close()

    worker = threading.Thread(target=run, name="sst-propagate", daemon=True)
    worker.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                return
            if isinstance(item, _Crash):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


def propagate(
    handle,
    memory: ReferenceMemory,
    targets: Iterable[tuple[Any, Any]],
    batch_size: int = 1,
    return_logits: bool = False,
    prefetch: int | None = None,
    loader_threads: int = 2,
    timings: StageTimer | None = None,
) -> Iterator[PropagationResult]:
    """Predict every target (key, image array or loader callable) from the reference memory only.

    Yields one `PropagationResult` per target, in input order. Targets go through the image
    encoder and memory attention `batch_size` at a time; a worker pool loads and resizes upcoming
    targets and the model runs in its own thread while the caller consumes results (resizing
    logits to each target's size and building its ID mask), with bounded queues so memory stays
    flat whatever the group size. A target whose loader raises comes back with `error` set
    instead of stopping the run. Closing the iterator early stops the work. `timings`, when
    given, receives the busy time of the "read", "model" and "post" stages.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if memory.image_size != int(handle.image_size):
        raise ValueError(
            f"reference memory was built at image_size {memory.image_size}, the model runs at {handle.image_size}"
        )
    prefetch = max(prefetch or 2 * batch_size, batch_size)
    stop = threading.Event()
    batches = _model_batches(
        handle,
        memory,
        targets,
        batch_size=batch_size,
        prefetch=prefetch,
        loader_threads=loader_threads,
        stop=stop,
        return_logits=return_logits,
        timings=timings,
    )
    # A caller holding the model lock would block a model thread: run the model inline then.
    items = batches if _lock_held_here(handle.lock) else _threaded(batches, stop)
    try:
        yield from _results(items, memory, return_logits, timings)
    finally:
        stop.set()
        items.close()
        release_scratch()


def _results(items, memory: ReferenceMemory, return_logits: bool, timings) -> Iterator:
    """Each target's result, in input order, from the model's batches."""
    for batch, good, low_res, scores in items:
        index = {id(p): i for i, p in enumerate(good)}
        if good and not isinstance(low_res, list):  # not yet finished on an accelerator
            low_res = finish_batch(
                good, low_res, scores, memory.obj_ids, return_logits, timings, defer_single=True
            )
        for prep in batch:
            if prep.error is not None:
                yield PropagationResult(key=prep.key, mask=None, error=prep.error)
                continue
            result = low_res[index[id(prep)]]
            yield result() if callable(result) else result
