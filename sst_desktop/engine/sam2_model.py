"""Load SAM2 once per process and share it between candidate generation and propagation."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sst_desktop.engine.checkpoints import BUILD_LOCK, ensure_checkpoint
from sst_desktop.engine.models import (
    DEFAULT_IMAGE_SIZE,
    DEVICES,
    IMAGE_SIZE_MAX,
    IMAGE_SIZE_MIN,
    IMAGE_SIZE_STEP,
    Variant,
    resolve_variant,
)
from sst_desktop.errors import CheckpointError, UserError

_cache: dict[tuple[str, str, str, int], Sam2Handle] = {}
# Guards `_cache` and `_loading` only, never held while a model loads (that takes seconds to
# minutes, and the GUI asks loaded_models() meanwhile).
_cache_lock = threading.Lock()
# One lock per key being loaded: a second caller for the same model waits for that one load.
_loading: dict[tuple[str, str, str, int], threading.Lock] = {}


@dataclass
class Sam2Handle:
    """A loaded SAM2 model (built like `build_sam2_video_predictor`) and what is needed to use it."""

    variant: Variant
    device: Any  # torch.device
    image_size: int
    model: Any  # sam2.sam2_video_predictor.SAM2VideoPredictor, in eval mode
    checkpoint: Path
    # Serialises use of the model between the GUI's candidate/refine calls and a propagation run.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (as upstream runs SAM2); a no-op context on CPU and MPS."""
        import torch

        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def resolve_device(name: str | None = "auto") -> str:
    """ "auto" -> cuda, then mps, then cpu; an explicit device that is not available -> UserError."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    base = name.split(":", 1)[0]
    if base == "cpu" and name == "cpu":
        return "cpu"
    if base == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"Device {name!r} was asked for but no CUDA GPU is available to PyTorch: "
                f'use device "auto" or "cpu" (or install a CUDA build of PyTorch).'
            )
        if ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UserError(
                    f"Device {name!r} does not exist: this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 to cuda:"
                    f'{torch.cuda.device_count() - 1} or "auto".'
                )
        return name
    if name == "mps":
        if not _mps_available():
            raise UserError(
                'Device "mps" was asked for but Apple\'s Metal backend is not available: '
                'use device "auto" or "cpu".'
            )
        return "mps"
    raise UserError(f"Unknown device {name!r}: use one of {', '.join(DEVICES)} (or cuda:N).")


def canonical_device(name: str | None = "auto") -> str:
    """`resolve_device`, with a bare "cuda" pinned to the current CUDA device ("cuda:N").

    "cuda" and "cuda:0" are the same GPU (usually): one cache key, one loaded model.
    """
    import torch

    device = resolve_device(name)
    if device == "cuda":
        return f"cuda:{torch.cuda.current_device()}"
    return device


def available_devices() -> list[str]:
    """Device choices that work on this machine, "auto" first."""
    import torch

    devices = ["auto"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if _mps_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@functools.lru_cache(maxsize=1)
def has_compiled_extension() -> bool:
    """True when sam2's optional compiled extension (`sam2._C`, used for hole filling) imports."""
    try:
        from sam2 import _C  # noqa: F401
    except (ImportError, OSError):  # absent, or built against another torch/CUDA
        return False
    return True


def get_model(
    variant: str | Variant,
    device: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    image_size: int = 1024,
    progress: Callable[[int, int | None], None] | None = None,
) -> Sam2Handle:
    """The process-wide model for (variant, device, checkpoint, image_size), loading it once."""
    variant = resolve_variant(variant)
    device_name = canonical_device(device)
    image_size = _check_image_size(image_size)
    path = ensure_checkpoint(variant, explicit=checkpoint, progress=progress)
    key = (variant.name, device_name, str(Path(path).resolve()), image_size)
    with _cache_lock:
        handle = _cache.get(key)
        if handle is not None:
            return handle
        key_lock = _loading.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_lock:
            handle = _cache.get(key)  # loaded by the caller this one waited for
        if handle is None:
            handle = _load(
                variant=variant, device_name=device_name, path=Path(path), image_size=image_size
            )
            with _cache_lock:
                _cache[key] = handle
                _loading.pop(key, None)
        return handle


def loaded_models() -> list[Sam2Handle]:
    """Handles loaded so far in this process."""
    with _cache_lock:
        return list(_cache.values())


def clear_cache() -> None:
    """Forget every loaded model (tests; freeing memory after switching models)."""
    with _cache_lock:
        _cache.clear()


def _check_image_size(image_size: int) -> int:
    """SAM2 needs a multiple of 32 (its backbone strides plus window sizes), within the bounds."""
    rule = (
        f"use {DEFAULT_IMAGE_SIZE} (default) or another multiple of {IMAGE_SIZE_STEP} from "
        f"{IMAGE_SIZE_MIN} to {IMAGE_SIZE_MAX}"
    )
    try:
        size = int(image_size)
    except (TypeError, ValueError):
        raise UserError(f"image_size {image_size!r} is not a number: {rule}.") from None
    if not IMAGE_SIZE_MIN <= size <= IMAGE_SIZE_MAX or size % IMAGE_SIZE_STEP:
        raise UserError(f"image_size {size} is not supported: {rule}.")
    return size


def _load(variant: Variant, device_name: str, path: Path, image_size: int) -> Sam2Handle:
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    device = torch.device(device_name)
    # Upstream's builder (random initialisation, then the checkpoint), not a meta-device build
    # with load_state_dict(assign=True): that measured slower for hiera-large (2.6 s against
    # 2.1 s) and leaves the memory attention's RoPE tables (attributes, not weights) on meta.
    overrides = [] if image_size == 1024 else [f"++model.image_size={image_size}"]
    try:
        with BUILD_LOCK:
            model = build_sam2_video_predictor(
                variant.config,
                ckpt_path=str(path),
                device=device,
                mode="eval",
                hydra_overrides_extra=overrides,
                apply_postprocessing=True,
            )
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():  # CUDA and MPS word it so (torch.OutOfMemoryError)
            # Not the checkpoint's fault: say what does help.
            raise UserError(
                f"Not enough memory on {device_name} to load {variant.name}: choose a smaller "
                f'model (e.g. sam2.1_hiera_tiny), close other GPU programs, or use device "cpu".'
            ) from None
        if str(exc).strip():
            raise  # a device or runtime failure, not a key mismatch: keep its own message
        # sam2 raises a bare RuntimeError (after logging keys) for a mismatched state dict.
        raise CheckpointError(
            f"Checkpoint {path} does not load into model {variant.name} (key mismatch): "
            f"choose the model this file was made for, or use {variant.checkpoint_name}."
        ) from None
    if not has_compiled_extension():
        # Upstream skips hole filling without the extension anyway (after a warning per frame);
        # switching it off gives the same numbers without the warnings.
        model.fill_hole_area = 0
    if device.type == "cuda":
        _enable_tf32(device)
    return Sam2Handle(
        variant=variant, device=device, image_size=image_size, model=model, checkpoint=path
    )


def _enable_tf32(device) -> None:
    """TF32 matmuls on Ampere and newer, as upstream's examples set for SAM2."""
    import torch

    if torch.cuda.get_device_properties(device).major >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def inference(handle: Sam2Handle) -> Iterator[None]:
    """Hold the model's lock, disable autograd and autocast as the device wants."""
    import torch

    with handle.lock, torch.inference_mode(), handle.autocast():
        yield
