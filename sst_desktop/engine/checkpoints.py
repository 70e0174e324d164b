"""Find, download (with resume) and verify SAM2 checkpoint files."""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import filelock

from sst_desktop import fileio, paths
from sst_desktop.console import fit_to_terminal, terminal_bar
from sst_desktop.engine.models import DEFAULT_VARIANT, SIZES, VARIANTS, Variant, resolve_variant
from sst_desktop.errors import CheckpointError

log = logging.getLogger(__name__)

# Replaces the official download folder (a mirror, or a local server in tests).
MODEL_URL_ENV = "SST_DESKTOP_MODEL_URL"

# progress(bytes_done, bytes_total or None); may raise to cancel (the .part file is kept).
ProgressFn = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20
_WAIT_POLL_S = 0.25  # how often a caller waiting for another download checks the lock
_verified: set[tuple[str, str, int, int, int]] = set()


def default_checkpoint_path(variant: str | Variant) -> Path:
    """Where the checkpoint of `variant` lives in the app's models folder."""
    return paths.models_dir() / resolve_variant(variant).checkpoint_name


def find_checkpoint(
    variant: str | Variant, explicit: str | os.PathLike | None = None
) -> Path | None:
    """The explicit checkpoint path (must exist), else the models-folder copy, else None."""
    variant = resolve_variant(variant)
    if explicit is not None and str(explicit).strip():
        path = Path(explicit).expanduser()
        if not path.is_file():
            if path.is_dir():
                what = (
                    f"is a folder: choose the .pt file inside it (e.g. {variant.checkpoint_name})"
                )
            elif path.exists():
                what = f"is {fileio.special_file_kind(path) or 'not a regular file'}: fix the path"
            else:
                what = "does not exist: fix the path"
            raise CheckpointError(
                f"Checkpoint file {path} {what}, or clear it to use "
                f"{variant.checkpoint_name} from {paths.models_dir()}."
            )
        return path
    path = default_checkpoint_path(variant)
    return path if path.is_file() else None


def preferred_variant() -> str:
    """The default variant if its checkpoint is downloaded, else the best downloaded one (newest
    family, then largest), else the default (which a first generation downloads)."""
    if default_checkpoint_path(DEFAULT_VARIANT).is_file():
        return DEFAULT_VARIANT
    downloaded = [v for v in VARIANTS.values() if default_checkpoint_path(v).is_file()]
    if not downloaded:
        return DEFAULT_VARIANT
    best = max(downloaded, key=lambda v: (v.family, SIZES.index(v.size)))
    return best.name


def checkpoint_url(variant: str | Variant, base_url: str | None = None) -> str:
    """Download URL of `variant`: `base_url` or $SST_DESKTOP_MODEL_URL replace the official folder."""
    variant = resolve_variant(variant)
    base = base_url or os.environ.get(MODEL_URL_ENV)
    if base:
        return f"{base.rstrip('/')}/{variant.checkpoint_name}"
    return variant.url


def ensure_checkpoint(
    variant: str | Variant,
    explicit: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    base_url: str | None = None,
    verify: bool = True,
    message: Callable[[str], None] | None = None,
) -> Path:
    """Path of a verified checkpoint for `variant`, downloading it into the models folder if needed."""
    variant = resolve_variant(variant)
    found = find_checkpoint(variant, explicit=explicit)
    if found is not None:
        if verify:
            verify_checkpoint(variant, found)
        return found
    return download_checkpoint(variant, progress=progress, base_url=base_url, message=message)


def download_checkpoint(
    variant: str | Variant,
    progress: ProgressFn | None = None,
    base_url: str | None = None,
    timeout: float = 30.0,
    message: Callable[[str], None] | None = None,
) -> Path:
    """Download `variant` into the models folder, resuming `<name>.part`; verify, then rename.

    `message(text)` hears about waiting for another process's download (default: stderr).
    """
    variant = resolve_variant(variant)
    dest = default_checkpoint_path(variant)
    part = dest.with_name(dest.name + ".part")
    url = checkpoint_url(variant, base_url=base_url)
    # One download per file across threads and processes (the GUI and a CLI run, say): a second
    # caller waits, then finds the finished file instead of appending to the same .part.
    with _download_lock(dest, progress=progress, message=message):
        if dest.is_file():
            verify_checkpoint(variant, dest)
            return dest
        _fetch(url=url, part=part, variant=variant, progress=progress, timeout=timeout)
        try:
            verify_checkpoint(variant, part)
        except CheckpointError as exc:
            part.unlink(missing_ok=True)
            reason = exc.short if isinstance(exc, UnreadableCheckpoint) else str(exc)
            raise CheckpointError(
                f"The downloaded {variant.checkpoint_name} from {url} is not a valid "
                f"{variant.name} checkpoint ({reason}); it was deleted: try again, or put a good "
                f"copy in {dest.parent}."
            ) from None
        os.replace(part, dest)
        _fsync_dir(dest.parent)
    return dest


def _fetch(
    url: str, part: Path, variant: Variant, progress: ProgressFn | None, timeout: float
) -> None:
    """Download `url` into `part`, appending to what is already there when the server allows it."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "sst-desktop"}
    if have:
        headers["Range"] = f"bytes={have}-"

    def fail(reason: object) -> CheckpointError:
        return CheckpointError(
            f"Could not download {variant.checkpoint_name} from {url} ({reason}): check the "
            f"connection and try again, or download it yourself and put it in {part.parent}."
        )

    try:
        request = urllib.request.Request(url, headers=headers)
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # The range starts at or past the end: the .part file is complete (or bogus);
            # verification decides.
            return
        raise fail(f"HTTP {exc.code} {exc.reason}") from None
    except ValueError as exc:  # no scheme: a mistyped $SST_DESKTOP_MODEL_URL
        raise fail(f"{exc}; a download URL starts with https:// or http://") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise fail(getattr(exc, "reason", None) or str(exc) or type(exc).__name__) from None

    with response:
        status = getattr(response, "status", 200)
        if status == 206:
            start = _range_start(response)
            if start != have:
                # The reply does not continue the .part file: appending would corrupt it.
                if not have:
                    raise fail(f"the server sent bytes from {start} instead of the whole file")
                response.close()
                part.unlink(missing_ok=True)
                _fetch(url=url, part=part, variant=variant, progress=progress, timeout=timeout)
                return
        total = _total_size(response, status=status, have=have)
        if status != 206:
            have = 0  # the server ignored the Range header: start again from byte 0
        mode = "ab" if have else "wb"
        done = have
        try:
            with open(part, mode) as f:
                if progress is not None:
                    progress(done, total)
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                f.flush()
                os.fsync(f.fileno())
        # IncompleteRead (an HTTPException, not an OSError) is how a cut chunked reply ends.
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException):
            raise fail(f"connection lost after {done} bytes; run again to resume") from None
    if total is not None and done != total:
        raise fail(f"got {done} of {total} bytes; run again to resume")


def _range_start(response) -> int | None:
    """First byte offset named by a partial reply's Content-Range ("bytes START-END/TOTAL")."""
    unit, _, spec = response.headers.get("Content-Range", "").strip().partition(" ")
    start = spec.split("-", 1)[0].strip()
    return int(start) if unit.lower() == "bytes" and start.isdigit() else None


def _total_size(response, status: int, have: int) -> int | None:
    """Full file size from Content-Range (partial reply) or Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    if status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    length = response.headers.get("Content-Length")
    if length and length.isdigit():
        return int(length) + (have if status == 206 else 0)
    return None


def download_lock_path(dest: Path) -> Path:
    """The lock file of downloads to `dest`: in the cache folder, so the models folder holds only
    models (filelock keeps the empty file after release; unlinking it would race with waiters)."""
    return paths.cache_dir() / "locks" / f"{dest.name}.lock"


@contextlib.contextmanager
def _download_lock(
    dest: Path, progress: ProgressFn | None, message: Callable[[str], None] | None
) -> Iterator[None]:
    """Hold `dest`'s download lock, a file lock that excludes other threads and processes.

    While another holder downloads, `progress(size of its .part, None)` is called every
    `_WAIT_POLL_S` so the waiter shows movement and can still cancel by raising.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(download_lock_path(dest))
    announced = False
    while True:
        try:
            lock.acquire(timeout=_WAIT_POLL_S)
            break
        except filelock.Timeout:
            if not announced:
                announced = True
                text = f"waiting for another download of {dest.name} to finish ({part})"
                if message is not None:
                    message(text)
                else:
                    print(text, file=sys.stderr, flush=True)
            if progress is not None:
                with contextlib.suppress(OSError):
                    progress(part.stat().st_size if part.is_file() else 0, None)
    try:
        yield
    finally:
        lock.release()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable where the OS allows fsync on a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def verify_checkpoint(variant: str | Variant, path: str | os.PathLike) -> None:
    """Raise CheckpointError unless `path` loads and its state dict matches `variant` key for key."""
    variant = resolve_variant(variant)
    path = Path(path)
    stat = path.stat()
    cache_key = (variant.name, str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if cache_key in _verified:
        return
    state = _load_state_dict(variant, path)
    expected = expected_shapes(variant.config)
    got = {key: tuple(value.shape) for key, value in state.items() if hasattr(value, "shape")}
    del state  # releases the memory map (Windows cannot rename a mapped file)
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong_shape:
        example = (wrong_shape or missing or unexpected)[0]
        log.info(
            "checkpoint %s vs %s: %d missing, %d unexpected, %d wrongly shaped weights, e.g. %r",
            path, variant.name, len(missing), len(unexpected), len(wrong_shape), example,
        )  # fmt: skip
        actual = identify_variant(got)
        wanted = _short_label(variant)
        if actual is not None:
            raise CheckpointError(
                f"Checkpoint {path} is {_short_label(actual)}; the project uses {wanted} (it does not "
                f"fit model {variant.name}): choose {_short_label(actual)} as the variant, or use "
                f"{variant.checkpoint_name}."
            )
        raise CheckpointError(
            f"Checkpoint {path} does not fit model {variant.name} ({wanted}) nor any other SAM2 "
            f"variant ({_mismatch(missing, unexpected, wrong_shape)}): use {variant.checkpoint_name}."
        )
    _verified.add(cache_key)


def _short_label(variant: Variant) -> str:
    """ "SAM 2.1 large": the variant's label without its download size."""
    return variant.label.split(" (", 1)[0]


def _mismatch(missing: list[str], unexpected: list[str], wrong_shape: list[str]) -> str:
    """ "3 weights missing, 1 of another shape", for the rare file that fits no variant."""
    parts = [
        f"{len(missing)} weights missing" if missing else "",
        f"{len(unexpected)} extra" if unexpected else "",
        f"{len(wrong_shape)} of another shape" if wrong_shape else "",
    ]
    return ", ".join(p for p in parts if p)


# Hiera trunk of each size: (number of blocks, embedding width).
_TRUNK_SHAPES = {"tiny": (12, 96), "small": (16, 96), "base_plus": (24, 112), "large": (48, 144)}


def identify_variant(shapes: dict[str, tuple[int, ...]]) -> Variant | None:
    """The variant a state dict (key -> shape) was made for, or None when it fits none."""
    blocks = {k.split(".")[3] for k in shapes if k.startswith("image_encoder.trunk.blocks.")}
    embed = shapes.get("image_encoder.trunk.patch_embed.proj.weight", (0,))[0]
    family = "2.1" if "no_obj_embed_spatial" in shapes else "2.0"
    for candidate in VARIANTS.values():
        if candidate.family != family or _TRUNK_SHAPES.get(candidate.size) != (len(blocks), embed):
            continue
        if expected_shapes(candidate.config) == shapes:  # cheap: built on the meta device
            return candidate
    return None


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that does not load at all; `short` says why in a few words."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


# The first bytes of the files torch.save writes: a zip archive, or (legacy) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _looks_like_torch_file(path: Path) -> bool:
    """True when the file starts as torch.save output does (so it is damaged, not foreign)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(_TORCH_MAGIC)


def is_app_download(path: Path) -> bool:
    """True for a checkpoint (or its .part) that the app downloads into its models folder: the
    only checkpoint files a message may advise deleting."""
    names = {v.checkpoint_name for v in VARIANTS.values()}
    names |= {f"{name}.part" for name in names}
    try:
        folder = path.absolute().parent.resolve()
        return path.name in names and folder == paths.models_dir().resolve()
    except OSError:
        return False


def _unreadable(variant: Variant, path: Path, torch_file: bool) -> UnreadableCheckpoint:
    """The error for a file that does not load as a checkpoint, with the fix that suits whose
    file it is: the app's own download is deleted and fetched again, a user's file never."""
    name = variant.checkpoint_name
    short = "it is damaged or incomplete" if torch_file else "it is not a SAM2 checkpoint"
    if is_app_download(path):
        return UnreadableCheckpoint(
            f"Checkpoint {path} cannot be loaded ({short}): delete it and download {name} "
            f"again, or put a good copy in {path.parent}.",
            short=short,
        )
    if torch_file:
        what = f"Checkpoint file {path} is damaged or incomplete: copy or download it again"
    else:
        what = f"File {path} is not a SAM2 checkpoint: choose a .pt checkpoint file such as {name}"
    return UnreadableCheckpoint(
        f"{what}, or clear the path to use {name} from {paths.models_dir()} (downloaded when "
        "first needed).",
        short=short,
    )


def _load_state_dict(variant: Variant, path: Path) -> dict:
    """The checkpoint's "model" dict, loaded safely (weights only, memory-mapped when possible)."""
    import torch

    try:
        try:
            # mmap reads only the headers now: cheap even for the 900 MB large model.
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:  # any failure to unpickle means a bad file
        # The loader's own words (often "pop from empty list") help a developer, not a user.
        log.info("checkpoint %s does not load: %s: %s", path, type(exc).__name__, exc)
        raise _unreadable(variant, path, torch_file=_looks_like_torch_file(path)) from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
        # A PyTorch file, but of something else: not damaged, just not a SAM2 checkpoint.
        raise _unreadable(variant, path, torch_file=False)
    return loaded["model"]


# Hydra's compose is process-wide state: one model build at a time.
BUILD_LOCK = threading.RLock()


@functools.cache
def expected_shapes(config: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the model built from `config`, without allocating its weights."""
    import sam2  # noqa: F401  (importing sam2 initialises Hydra on its config module)
    from hydra import compose
    from hydra.utils import instantiate

    with BUILD_LOCK:
        cfg = compose(config_name=config)
        with _built_on_meta_device():
            model = instantiate(cfg.model, _recursive_=True)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@contextlib.contextmanager
def _built_on_meta_device() -> Iterator[None]:
    """Create tensors on the meta device (shape only, nothing allocated or initialised) while a
    model is built, except those whose values the build reads.

    sam2's Hiera reads its drop-path schedule with `.item()` on a `torch.linspace` while it is
    built, which a meta tensor cannot answer: that constructor makes CPU tensors here (a few
    floats). Both are torch function modes, so only the calling thread is affected.
    """
    import torch  # torch: only a shape check or a model load gets here

    with torch.device("meta"), _values_read_while_building()():
        yield


@functools.cache
def _values_read_while_building() -> type:
    """The torch function mode that creates the tensors a build reads values of on the CPU."""
    import torch  # torch: only a shape check or a model load gets here
    from torch.overrides import TorchFunctionMode

    read = {torch.linspace}

    class ValuesOnCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in read:
                kwargs["device"] = "cpu"  # given explicitly, so the meta device mode leaves it
            return func(*args, **kwargs)

    return ValuesOnCpu


def terminal_progress(label: str, stream: IO[str] | None = None) -> ProgressFn:
    """A progress callback drawing a tqdm bar on a terminal, or printing a line per 10 % otherwise."""
    out = stream if stream is not None else sys.stderr
    if hasattr(out, "isatty") and out.isatty():
        bar = terminal_bar(out, desc=label, unit="B", unit_scale=True, unit_divisor=1000)

        def draw(done: int, total: int | None) -> None:
            fit_to_terminal(bar, out)
            bar.total = total
            bar.update(done - bar.n)
            if total is not None and done >= total:
                bar.close()

        return draw
    state = {"decile": -1}

    def report(done: int, total: int | None) -> None:
        mb = done / 1e6
        if total:
            pct = min(100, int(done * 100 / total))
            text = f"{label}: {mb:.1f}/{total / 1e6:.1f} MB {pct:3d}%"
            decile = pct // 10
        else:
            text = f"{label}: {mb:.1f} MB"
            decile = int(mb // 50)
        if decile != state["decile"]:
            state["decile"] = decile
            out.write(text + "\n")
            out.flush()

    return report
