"""Post-processing of propagated targets: low-res logits to each target's full-size ID mask.

For every target, upstream's bilinear upsampling of the (objects, 1, h, w) low-res logits to the
target's own size, then the ID rule of `propagation` (highest positive logit wins, ties to the
lowest ID, elsewhere 0). On the CPU the full-size work reuses per-thread buffers, and a large
photo is composed only where the low-res logits leave a cell undecided (`certain`); on an
accelerator targets of one size share one call. Every path gives the same masks.

torch is imported inside functions: the GUI imports this module (through `propagation`) at startup.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sst_desktop.engine import certain

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class PropagationResult:
    """One target's prediction (or the error that made it a bad frame)."""

    key: Any
    mask: np.ndarray | None  # (H, W) uint8 of the references' IDs at the target's own size
    object_scores: dict[int, float] = field(default_factory=dict)  # object-score logit per ID
    logits: np.ndarray | None = None  # (objects, H, W) float32 when return_logits=True
    error: BaseException | None = None  # set (and mask None) when the target failed to load
    # Pixels per ID 0..255 where they came cheaply with the mask (counted on the accelerator, or
    # from the low-res cells of a large photo); None otherwise (count the mask itself).
    id_counts: list[int] | None = None

    @property
    def ok(self) -> bool:
        """True when the target was predicted."""
        return self.error is None


class StageTimer(Protocol):
    """Receives the busy and CPU time of a pipeline stage ("read", "model", "post")."""

    def add(self, stage: str, seconds: float, count: int = 1, cpu_s: float = 0.0) -> None: ...


@contextlib.contextmanager
def timed(timings: StageTimer | None, stage: str, count: int = 1) -> Iterator[None]:
    """Add the wall and this thread's CPU time spent in the block to `stage` (if timed)."""
    if timings is None:
        yield
        return
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        timings.add(stage, time.perf_counter() - start, count, cpu_s=time.thread_time() - cpu)


@dataclass
class PreparedTarget:
    key: Any
    height: int = 0
    width: int = 0
    tensor: Any = None
    error: BaseException | None = None


# Per-thread buffers for full-size work on the CPU: a fresh 12-MP float tensor costs more in page
# faults than the arithmetic done in it, so the post-processing thread reuses its buffers.
_scratch = threading.local()


def _scratch_tensor(name: str, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """A view of this thread's buffer `name`, grown when needed and kept for the next targets.

    Kept by element count, not shape, so portrait and landscape photos share one buffer.
    """
    import torch

    cache = getattr(_scratch, "buffers", None)
    if cache is None:
        cache = _scratch.buffers = {}
    count = math.prod(shape)
    buf = cache.get(name)
    if (
        buf is None
        or buf.numel() < count
        or buf.dtype != dtype
        or buf.device != torch.device(device)
    ):
        cache.pop(name, None)  # free the old one before allocating its successor
        buf = cache[name] = torch.empty(count, dtype=dtype, device=device)
    return buf[:count].view(shape)


def release_scratch() -> None:
    """Drop this thread's buffers (end of a propagation)."""
    _scratch.buffers = {}


def _upsample(low_res: torch.Tensor, height: int, width: int, reuse: bool) -> torch.Tensor:
    """Bilinear upsampling of (O, 1, h, w) logits as upstream does it, into a reused buffer on CPU."""
    import torch
    import torch.nn.functional as F

    if reuse and low_res.device.type == "cpu" and low_res.dtype == torch.float32:
        out = _scratch_tensor("logits", (*low_res.shape[:2], height, width), low_res.dtype, "cpu")
        # The same kernel F.interpolate calls, writing into `out`.
        return torch.ops.aten.upsample_bilinear2d.out(
            low_res.contiguous(), [height, width], False, None, None, out=out
        )
    return F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)


def compose_id_mask(logits: torch.Tensor, obj_ids: Sequence[int]) -> np.ndarray:
    """ID mask from per-object logits (O, H, W): highest positive logit wins, ties to the lowest ID."""
    return _compose_ids(logits, obj_ids).cpu().numpy()


def _compose_ids(logits: torch.Tensor, obj_ids: Sequence[int]) -> torch.Tensor:
    """`compose_id_mask` as a uint8 tensor on the logits' device."""
    import torch

    if logits.shape[0] == 0:
        return torch.zeros(tuple(logits.shape[1:]), dtype=torch.uint8, device=logits.device)
    # One object at a time in uint8, instead of an arg-max with int64 indices and a gather: the
    # same result (strict ">" keeps the first of equal maxima; a NaN makes the maximum NaN, so
    # background, as in torch.max) at a fraction of the memory traffic.
    shape, device = tuple(logits.shape[1:]), logits.device
    on_cpu = device.type == "cpu"
    # Inference mode whoever calls: the reused buffers are then always written in the mode
    # they were made in (a buffer made in inference mode refuses writes outside it).
    with torch.inference_mode():
        ids = torch.full(shape, int(obj_ids[0]), dtype=torch.uint8, device=device)
        flag = _scratch_tensor("flag", shape, torch.bool, device) if on_cpu else None
        best = logits[0]
        for index in range(1, logits.shape[0]):
            other = logits[index]
            ids.masked_fill_(
                torch.gt(other, best, out=flag) if on_cpu else other > best, obj_ids[index]
            )
            if index == 1:  # a buffer of our own: logits[0] is the caller's
                out = _scratch_tensor("best", shape, logits.dtype, device) if on_cpu else None
                best = torch.maximum(best, other, out=out) if on_cpu else torch.maximum(best, other)
            else:
                torch.maximum(best, other, out=best)
        if on_cpu:
            ids.masked_fill_(torch.logical_not(torch.gt(best, 0, out=flag), out=flag), 0)
        else:
            ids.masked_fill_(~(best > 0), 0)
    return ids


def _counts_per_target(ids: torch.Tensor, targets: int) -> list[list[int]] | None:
    """Pixels per ID 0..255 of each of `targets` equal-sized uint8 masks stacked in `ids`, or
    None where the device cannot count them (the writer then counts each mask on the CPU).

    One count per target on the uint8 mask itself: no index tensor the size of the masks."""
    import torch

    try:
        flat = ids.reshape(targets, -1)
        counts = torch.stack([torch.bincount(row, minlength=256) for row in flat])
    except (RuntimeError, NotImplementedError, TypeError):  # e.g. no uint8 bincount there
        return None
    return counts.tolist()


def finish(
    prep: PreparedTarget,
    low_res,
    scores: list[float],
    obj_ids: list[int],
    return_logits: bool,
    timings: StageTimer | None = None,
) -> PropagationResult:
    """Resize one target's low-res logits to its own size (as upstream) and build its ID mask.

    A failure here (e.g. out of memory for a huge photo's full-size logits) is that target's
    error: a bad frame never ends the run.
    """
    with timed(timings, "post"):
        try:
            return _finish_target(prep, low_res, scores, obj_ids, return_logits)
        except Exception as exc:
            return PropagationResult(key=prep.key, mask=None, error=exc)


def _finish_target(
    prep: PreparedTarget, low_res, scores: list[float], obj_ids: list[int], return_logits: bool
) -> PropagationResult:
    import torch

    with torch.inference_mode():
        logits = low_res
        if logits.shape[-2:] != (prep.height, prep.width):
            # Returned logits must be the caller's own; otherwise a reused buffer will do.
            logits = _upsample(logits, prep.height, prep.width, reuse=not return_logits)
        logits = logits[:, 0]
        counts = None
        if _decides_cells(low_res, logits, return_logits):
            # Large photo on the CPU: compose only along object boundaries (engine/certain.py).
            mask, cell_counts = certain.compose_decided(
                low_res[:, 0].numpy(), logits.numpy(), obj_ids
            )
            counts = cell_counts.tolist()
        elif logits.device.type != "cpu":
            # On an accelerator the counts come from there: no full-size pass on the CPU.
            ids = _compose_ids(logits, obj_ids)
            per_target = _counts_per_target(ids, targets=1)
            counts = per_target[0] if per_target else None
            mask = ids.cpu().numpy()
        else:
            mask = compose_id_mask(logits, obj_ids)
        return PropagationResult(
            key=prep.key,
            mask=mask,
            object_scores=dict(zip(obj_ids, scores, strict=True)),
            logits=logits.cpu().numpy().astype(np.float32, copy=True) if return_logits else None,
            id_counts=counts,
        )


# From this many full-size pixels on, decided cells skip the full-size ID rule on the CPU.
DECIDED_CELLS_MIN_PIXELS = 1 << 20


def _decides_cells(low_res, logits, return_logits: bool) -> bool:
    """Whether `certain.compose_decided` applies: CPU, large, finite, upsampled (not returned)."""
    import torch

    return (
        not return_logits
        and logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.shape[-2] * logits.shape[-1] >= DECIDED_CELLS_MIN_PIXELS
        and tuple(logits.shape[-2:]) != tuple(low_res.shape[-2:])
        and bool(torch.isfinite(low_res).all())
    )


# Targets of one size are upsampled and composed in one call while their full-size logits stay
# under this many elements (e.g. 20 masks of 640x480 with two objects; a 12-MP photo goes alone).
POST_BATCH_ELEMENTS = 1 << 24


def finish_batch(
    good: list[PreparedTarget],
    low_res,
    scores: list[list[float]],
    obj_ids: list[int],
    return_logits: bool,
    timings: StageTimer | None = None,
    defer_single: bool = False,
) -> list:
    """`finish` of every target in a model batch, those of equal size in one tensor call.

    Each (target, object) plane is upsampled on its own whatever the batch, so the masks are
    the ones `finish` makes target by target; per-target Python and dispatch work is what the
    batching saves on small images. With `defer_single`, a target finished on its own (a large
    photo) is left as a callable, so the caller hands each mask on as soon as it is made.
    """
    results: list = [None] * len(good)
    together = _post_batches_on(low_res.device.type)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, prep in enumerate(good):
        by_size.setdefault((prep.height, prep.width), []).append(i)
    per_target = max(1, len(obj_ids))
    for (height, width), members in by_size.items():
        step = max(1, POST_BATCH_ELEMENTS // max(1, per_target * height * width))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            if return_logits or len(chunk) == 1 or not together:
                for i in chunk:
                    one = functools.partial(
                        finish, good[i], low_res[i], scores[i], obj_ids, return_logits, timings
                    )
                    results[i] = one if defer_single else one()
                continue
            with timed(timings, "post", count=len(chunk)):
                try:
                    masks, counts = _compose_same_size(low_res, chunk, obj_ids, height, width)
                except Exception:  # e.g. out of memory: each target on its own, errors its own
                    masks = counts = None
            for n, i in enumerate(chunk):
                if masks is None:
                    results[i] = finish(good[i], low_res[i], scores[i], obj_ids, False, timings)
                else:
                    results[i] = PropagationResult(
                        key=good[i].key,
                        mask=masks[n],
                        object_scores=dict(zip(obj_ids, scores[i], strict=True)),
                        id_counts=counts[n] if counts else None,
                    )
    return results  # type: ignore[return-value]


def _post_batches_on(device_type: str) -> bool:
    """Whether targets of one size share a post-processing call on this device.

    On an accelerator it saves kernel launches; on the CPU it was slower (4.3-4.6 against
    2.9-3.1 ms per 640x480 target, 16 targets, two objects): one target at a time reuses its
    buffers, a batch needs a fresh one of all their logits.
    """
    return device_type != "cpu"


def _compose_same_size(
    low_res, chunk: list[int], obj_ids, height: int, width: int
) -> tuple[list[np.ndarray], list[list[int]] | None]:
    """ID masks of the targets `chunk` (all `height` x `width`) from one upsampling call, and
    their pixel counts per ID, counted where the masks were made (None if it cannot count)."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        rows = low_res[chunk][:, :, 0]  # (n, O, h, w)
        # Objects outermost: the upsampled (O * n, 1, H, W) block is then (O, n * H, W), the
        # targets stacked vertically, and one compose call makes all their masks.
        planes = rows.transpose(0, 1).reshape(-1, 1, *rows.shape[-2:])
        logits = planes
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(
                planes, size=(height, width), mode="bilinear", align_corners=False
            )
        stacked = logits.reshape(len(obj_ids), len(chunk) * height, width)
        ids = _compose_ids(stacked, obj_ids)
        counts = _counts_per_target(ids, targets=len(chunk))
        ids = ids.cpu().numpy()
    return [ids[n * height : (n + 1) * height] for n in range(len(chunk))], counts
