"""The stages around the model in a run: reader pool size, the mask writer pool, stage timings.

A run overlaps four stages: reading (decode, EXIF, resize to the model size) on a thread pool,
the model in batches on its own thread, post-processing (full-size logits, ID mask) as tensor
work on the model's device, and writing (review flags from one histogram, PNG encoding) on a
second thread pool. Pillow releases the GIL while it decodes, resizes, transposes and encodes,
so threads scale with the cores without the copies a process pool would need. Every hand-over
is bounded in images, so memory stays flat whatever the group size.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sst_desktop.engine.postprocess import timed

STAGES = ("read", "model", "post", "write")
STAGE_HELP = {
    "read": "decode, EXIF, resize to the model size",
    "model": "image encoder and memory attention",
    "post": "full-size logits, ID mask",
    "write": "review flags, PNG encoding",
}


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class PipelineSizes:
    """Worker counts and the bounds of the hand-overs between stages (all in images)."""

    read_workers: int
    write_workers: int
    read_ahead: int  # targets read ahead of the model
    write_pending: int  # masks waiting for or being written

    @classmethod
    def for_machine(cls, batch_size: int, cores: int | None = None) -> PipelineSizes:
        """One reader per core, half as many writers; enough read-ahead to keep a batch ready."""
        cores = cores or cpu_count()
        write_workers = max(1, cores // 2)
        return cls(
            read_workers=cores,
            write_workers=write_workers,
            read_ahead=max(2 * batch_size, cores),
            write_pending=2 * write_workers,
        )


# Pillow allocates an image's rows in blocks (16 MB by default) and can keep freed blocks for the
# next image. A 12-MP RGB photo (4 bytes per pixel: 48 MB) then takes 3 blocks whose sizes differ
# from those of its EXIF-rotated copy, so reusing them means resizing them (new pages, faults).
# With blocks of up to 128 MB a photo of up to 32 MP is one block, and an upright photo and a
# rotated one need blocks of the same size: measured on a 12-MP JPEG, decoding 70 -> 55 ms and
# rotating 45 -> 30 ms. Each reader holds at most two photos at once (decoded and rotated), so
# the cache holds no more than the readers use anyway.
PILLOW_BLOCKS_PER_READER = 4
PILLOW_BLOCK_SIZE = 128 << 20


class _PillowMemory:
    """Pillow's block settings are the process's: runs overlapping in one process (threads of a
    Dask worker, two callers) share one change, made by the first and undone by the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = (0, 0)

    def enter(self, core: Any, blocks: int, block_size: int) -> None:
        """Raise the cache to `blocks` blocks of up to `block_size` bytes (never lower it)."""
        with self._lock:
            if self._users == 0:
                self._saved = (core.get_blocks_max(), core.get_block_size())
            self._users += 1
            core.set_blocks_max(max(core.get_blocks_max(), blocks))
            core.set_block_size(max(core.get_block_size(), block_size))

    def leave(self, core: Any) -> None:
        """The last user out puts the settings back as they were before the first came in."""
        with self._lock:
            self._users -= 1
            if self._users == 0:
                blocks_max, block_size = self._saved
                core.set_block_size(block_size)
                core.set_blocks_max(blocks_max)  # also frees the cached blocks above it


_PILLOW_MEMORY = _PillowMemory()


@contextlib.contextmanager
def pillow_block_cache(blocks: int, block_size: int = PILLOW_BLOCK_SIZE) -> Iterator[None]:
    """Let Pillow keep up to `blocks` freed memory blocks of up to `block_size` bytes for the next
    image, until the last of the overlapping users in this process leaves.

    Without it every decoded photo gets fresh pages from the system, and faulting them in costs
    about as much as decoding the JPEG.
    """
    core = getattr(Image, "core", None)
    names = ("get_blocks_max", "set_blocks_max", "get_block_size", "set_block_size")
    if core is None or not all(hasattr(core, name) for name in names):
        yield
        return
    _PILLOW_MEMORY.enter(core, blocks, block_size)
    try:
        yield
    finally:
        _PILLOW_MEMORY.leave(core)


class StageTimes:
    """Busy and CPU time per stage (summed over its workers), the run's wall and CPU time.

    Busy time is wall-clock time inside a stage's code: on a machine with fewer cores than
    busy threads it includes waiting for a core. CPU time is the CPU of the threads that ran
    the stage (`time.thread_time`); for the model, whose own worker threads do most of its
    work, it is the process's CPU less the other stages'. Thread-safe.
    """

    def __init__(self, workers: dict[str, int]) -> None:
        self.workers = dict(workers)
        self._lock = threading.Lock()
        self.busy = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.items = dict.fromkeys(STAGES, 0)
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def add(self, stage: str, seconds: float, count: int = 1, cpu_s: float = 0.0) -> None:
        """Record `seconds` of work (`cpu_s` of it on the CPU) on `count` images in `stage`."""
        with self._lock:
            self.busy[stage] = self.busy.get(stage, 0.0) + seconds
            self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu_s
            self.items[stage] = self.items.get(stage, 0) + count

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        """Count the block's wall-clock and process CPU time as pipeline time."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall_s += time.perf_counter() - wall
            self.cpu_s += time.process_time() - cpu

    def to_dict(self, images: int) -> dict[str, Any]:
        """JSON-able form: per stage busy and CPU seconds, ms per image and how busy it was."""
        cpu = {name: self.cpu.get(name, 0.0) for name in STAGES}
        outside = sum(cpu[name] for name in STAGES if name != "model")
        cpu["model"] = max(0.0, self.cpu_s - outside)  # the model's threads and the rest
        stages = {
            name: stage_row(
                self.busy.get(name, 0.0),
                cpu[name],
                workers=self.workers.get(name, 1),
                wall_s=self.wall_s,
                images=images,
            )
            for name in STAGES
        }
        return {
            "images": images,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "images_per_s": round(images / self.wall_s, 3) if self.wall_s > 0 else None,
            "cpu_ms_per_image": per_image_ms(self.cpu_s, images),
            "stages": stages,
        }


def per_image_ms(seconds: float, images: int) -> float | None:
    """Milliseconds per image, one decimal (None without images)."""
    return round(1000 * seconds / images, 1) if images else None


def stage_row(
    busy_s: float, cpu_s: float, workers: int, wall_s: float, images: int
) -> dict[str, Any]:
    """One stage's timings: seconds, per image, and busy time as a share of its workers' time."""
    capacity = wall_s * workers
    return {
        "busy_s": round(busy_s, 3),
        "cpu_s": round(cpu_s, 3),
        "ms_per_image": per_image_ms(busy_s, images),
        "cpu_ms_per_image": per_image_ms(cpu_s, images),
        "workers": workers,
        "busy_pct": round(100 * busy_s / capacity, 1) if capacity > 0 else None,
    }


def format_timings(timings: dict[str, Any]) -> list[str]:
    """The `--timings` table: per stage wall and CPU time per image and how busy it was."""
    images = timings.get("images") or 0
    if not images:
        return ["Timings: no image was predicted in this run."]
    lines = [
        f"Timings: {images} image(s) in {timings['wall_s']:.2f} s "
        f"({timings['images_per_s']:.2f} images/s), process CPU "
        f"{timings['cpu_ms_per_image']:.0f} ms per image",
        f"  {'stage':<6} {'ms/image':>9} {'CPU ms':>7} {'workers':>7} {'busy':>6}  what",
    ]
    busiest, top = None, -1.0
    for name in STAGES:
        row = timings["stages"][name]
        pct = row["busy_pct"] if row["busy_pct"] is not None else 0.0
        if pct > top:
            busiest, top = name, pct
        cpu = row.get("cpu_ms_per_image")
        cpu_text = "-" if cpu is None else f"{cpu:.1f}{'*' if name == 'model' else ''}"
        lines.append(
            f"  {name:<6} {row['ms_per_image'] or 0:>9.1f} {cpu_text:>7} {row['workers']:>7} "
            f"{pct:>5.0f}%  {STAGE_HELP[name]}"
        )
    outside = [timings["stages"][n].get("cpu_s") for n in STAGES if n != "model"]
    if all(value is not None for value in outside):
        lines.append(
            f"  CPU outside the model: {1000 * sum(outside) / images:.0f} ms per image "
            "(* model: the process's CPU less the other stages')"
        )
    total = sum(timings["stages"][name]["busy_s"] for name in STAGES)
    if timings["wall_s"] > 0:
        lines.append(
            f"  stages overlap: {total:.2f} s of stage work in {timings['wall_s']:.2f} s "
            f"({total / timings['wall_s']:.1f}x)"
        )
    lines.append(f"  busiest stage: {busiest} (the bottleneck when near 100%)")
    return lines


Outcome = tuple[str, Any, BaseException | None]  # (key, value, error)


class MaskWriter:
    """Runs write jobs on a thread pool; hands outcomes back in submission order, bounded.

    `submit` returns the outcomes that are complete at the head of the queue, and waits for the
    oldest job while more than `max_pending` are in flight (flat memory: each holds a mask).
    """

    def __init__(self, workers: int, max_pending: int, timings: StageTimes | None = None) -> None:
        self.max_pending = max(1, max_pending)
        self.timings = timings
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sst-write")
        self._pending: deque[tuple[str, Future]] = deque()
        self.peak_pending = 0  # the most jobs in flight at once (the bound holds it)

    def submit(self, key: str, job: Callable[[], Any]) -> list[Outcome]:
        """Queue `job` for `key`; return the outcomes ready in order (waiting if at the bound)."""
        return self._add(key, lambda: self._pool.submit(self._run, job))

    def done(
        self, key: str, value: Any = None, error: BaseException | None = None
    ) -> list[Outcome]:
        """Queue an outcome known already (e.g. a frame that failed to read), keeping the order."""

        def known() -> Future:
            future: Future = Future()
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
            return future

        return self._add(key, known)

    def _add(self, key: str, start: Callable[[], Future]) -> list[Outcome]:
        """Make room under the bound, then queue one job; return the outcomes ready in order."""
        out = self._collect(wait_over=self.max_pending - 1)
        self._pending.append((key, start()))
        self.peak_pending = max(self.peak_pending, len(self._pending))
        return out + self._collect(wait_over=len(self._pending))

    def drain(self, cancel: bool = False) -> list[Outcome]:
        """Wait for every queued job; return all outcomes in order. `cancel` first drops the jobs
        that have not started (they come back with a CancelledError)."""
        if cancel:
            for _, future in self._pending:
                future.cancel()
        return self._collect(wait_over=0)

    def close(self) -> None:
        """Finish the jobs in flight (their files are complete) and stop the threads."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, job: Callable[[], Any]) -> Any:
        with timed(self.timings, "write"):
            return job()

    def _collect(self, wait_over: int) -> list[Outcome]:
        """Pop finished outcomes at the head; wait for the head while more than `wait_over` remain."""
        out: list[Outcome] = []
        while self._pending and (len(self._pending) > wait_over or self._pending[0][1].done()):
            key, future = self._pending.popleft()
            try:
                out.append((key, future.result(), None))
            except Exception as exc:
                out.append((key, None, exc))
        return out
