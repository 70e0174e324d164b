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


# Pillow allocates images in 16 MB blocks; a 12-MP RGB photo takes 3, its EXIF-rotated copy 3 more.
PILLOW_BLOCKS_PER_READER = 8


@contextlib.contextmanager
def pillow_block_cache(blocks: int) -> Iterator[None]:
    """Let Pillow keep up to `blocks` freed memory blocks for the next image (restored after).

    Without it every decoded photo gets fresh pages from the system, and faulting them in costs
    about as much as decoding the JPEG.
    """
    core = getattr(Image, "core", None)
    get_max = getattr(core, "get_blocks_max", None)
    set_max = getattr(core, "set_blocks_max", None)
    if get_max is None or set_max is None:
        yield
        return
    before = get_max()
    set_max(max(before, blocks))
    try:
        yield
    finally:
        set_max(before)


class StageTimes:
    """Busy time per stage (summed over its workers), the run's wall and CPU time, thread-safe."""

    def __init__(self, workers: dict[str, int]) -> None:
        self.workers = dict(workers)
        self._lock = threading.Lock()
        self.busy = dict.fromkeys(STAGES, 0.0)
        self.items = dict.fromkeys(STAGES, 0)
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        """Record `seconds` of work on `count` images in `stage`."""
        with self._lock:
            self.busy[stage] = self.busy.get(stage, 0.0) + seconds
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
        """JSON-able form: per stage busy seconds, ms per image and how busy its workers were."""
        stages = {}
        for name in STAGES:
            busy = self.busy.get(name, 0.0)
            workers = self.workers.get(name, 1)
            capacity = self.wall_s * workers
            stages[name] = {
                "busy_s": round(busy, 3),
                "ms_per_image": round(1000 * busy / images, 1) if images else None,
                "workers": workers,
                "busy_pct": round(100 * busy / capacity, 1) if capacity > 0 else None,
            }
        return {
            "images": images,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "images_per_s": round(images / self.wall_s, 3) if self.wall_s > 0 else None,
            "cpu_ms_per_image": round(1000 * self.cpu_s / images, 1) if images else None,
            "stages": stages,
        }


def format_timings(timings: dict[str, Any]) -> list[str]:
    """The `--timings` table: per stage time per image and how busy its workers were."""
    images = timings.get("images") or 0
    if not images:
        return ["Timings: no image was predicted in this run."]
    lines = [
        f"Timings: {images} image(s) in {timings['wall_s']:.2f} s "
        f"({timings['images_per_s']:.2f} images/s), process CPU "
        f"{timings['cpu_ms_per_image']:.0f} ms per image",
        f"  {'stage':<6} {'ms/image':>9} {'workers':>7} {'busy':>6}  what",
    ]
    busiest, top = None, -1.0
    for name in STAGES:
        row = timings["stages"][name]
        pct = row["busy_pct"] if row["busy_pct"] is not None else 0.0
        if pct > top:
            busiest, top = name, pct
        lines.append(
            f"  {name:<6} {row['ms_per_image'] or 0:>9.1f} {row['workers']:>7} {pct:>5.0f}%  "
            f"{STAGE_HELP[name]}"
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
        start = time.perf_counter()
        try:
            return job()
        finally:
            if self.timings is not None:
                self.timings.add("write", time.perf_counter() - start)

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
