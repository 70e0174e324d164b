"""The staged run pipeline: the same masks as the one-target-at-a-time path, bounded hand-overs,
cancel, --timings and the opt-in fast decode."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import image_path, make_project, run_cli
from conftest import TEST_IMAGE_SIZE, TEST_VARIANT
from PIL import Image

from sst_desktop.data.images import load_image_array, load_model_input
from sst_desktop.data.masks import id_counts, read_mask, stage_prediction, write_mask
from sst_desktop.data.project import Project
from sst_desktop.data.review import review_counts, review_mask
from sst_desktop.engine.propagation import _normalised, compose_id_mask, preprocess_image
from sst_desktop.errors import ImageError
from sst_desktop.run.pipeline import MaskWriter, PipelineSizes, StageTimes, format_timings
from sst_desktop.run.runner import RunOptions, run_inference

# --------------------------------------------------------------------------- helpers


def smooth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random RGB picture (so JPEG artefacts and resizing matter, as in photos)."""
    small = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-10, 11, size=(height, width, 3))
    return np.clip(np.asarray(big).astype(np.int16) + noise, 0, 255).astype(np.uint8)


def save_jpeg(path: Path, pixels: np.ndarray, orientation: int | None = None) -> None:
    """A JPEG (whatever the file's extension says), optionally with an EXIF orientation."""
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(path, format="JPEG", quality=92, **extra)


def old_compose(logits, obj_ids) -> np.ndarray:
    """The previous ID-mask rule as it was written: arg-max with a gather, then logit > 0."""
    import torch

    best_val, best_idx = logits.max(dim=0)
    lut = torch.tensor(list(obj_ids), dtype=torch.uint8)
    return torch.where(best_val > 0, lut[best_idx], 0).numpy()


def previous_pipeline(handle, memory, paths: list[tuple[str, Path]], batch_size: int) -> dict:
    """Masks as the previous run computed them: full-size array, resize, batches of `batch_size`
    (a bad frame takes its place in a batch), full-size logits, arg-max rule."""
    import torch
    import torch.nn.functional as F

    from sst_desktop.engine.propagation import _predict_batch

    loaded = []
    for pk, path in paths:
        try:
            array = load_image_array(path)
            loaded.append((pk, array, preprocess_image(array, handle.image_size)))
        except ImageError:
            loaded.append((pk, None, None))
    masks = {}
    for start in range(0, len(loaded), batch_size):
        good = [item for item in loaded[start : start + batch_size] if item[1] is not None]
        if not good:
            continue
        low_res, _ = _predict_batch(handle, memory, torch.stack([t for _, _, t in good]))
        for i, (pk, array, _) in enumerate(good):
            logits = F.interpolate(
                low_res[i], size=array.shape[:2], mode="bilinear", align_corners=False
            )[:, 0]
            masks[pk] = old_compose(logits, memory.obj_ids)
    return masks


@pytest.fixture(scope="module")
def handle(sam2_checkpoint):
    from sst_desktop.engine.sam2_model import get_model

    return get_model(
        TEST_VARIANT, device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )


def mixed_project(tmp_path: Path, checkpoint: Path) -> tuple[Path, list[str]]:
    """Group "a": a reference, then targets of mixed sizes, EXIF-rotated JPEGs and, in the
    middle, a corrupt file. Returns the spec and the target pks in order."""
    sizes = [(96, 80), (130, 70), (64, 64), (80, 120), (100, 60), (70, 90), (88, 88)]
    spec = make_project(tmp_path, checkpoint, groups={"a": sizes}, references={"a": 1})
    rng = np.random.default_rng(21)
    # a2, a5: JPEGs stored sideways / upside down with an EXIF orientation; a4: not an image.
    save_jpeg(image_path(spec, "a2"), smooth(rng, 70, 130), orientation=6)
    save_jpeg(image_path(spec, "a5"), smooth(rng, 90, 70), orientation=3)
    image_path(spec, "a4").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return spec, [f"a{i}" for i in range(1, len(sizes))]


def reference_memory(handle, spec: Path):
    from sst_desktop.engine.propagation import build_reference_memory

    mask = read_mask(spec.parent / "ref_masks" / "a0.png")
    return build_reference_memory(handle, [(load_image_array(image_path(spec, "a0")), mask)])


# --------------------------------------------------------------------------- no model


def test_model_input_equals_loading_then_resizing(tmp_path):
    """The readers' one-step decode+EXIF+resize gives exactly the model input of the full-size path."""
    import torch

    rng = np.random.default_rng(3)
    files = []
    for orientation in (None, 1, 2, 3, 4, 5, 6, 7, 8):
        path = tmp_path / f"o{orientation}.jpg"
        save_jpeg(path, smooth(rng, 75, 130), orientation=orientation)
        files.append(path)
    rgba = np.dstack([smooth(rng, 50, 40), rng.integers(0, 256, (50, 40), dtype=np.uint8)])
    for name, image in (
        ("rgba.png", Image.fromarray(rgba, mode="RGBA")),
        ("grey.png", Image.fromarray(smooth(rng, 33, 47)[..., 0])),
        ("grey16.png", Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16))),
        ("palette.png", Image.fromarray(smooth(rng, 60, 20)).convert("P")),
    ):
        image.save(tmp_path / name)
        files.append(tmp_path / name)
    for path in files:
        full = load_image_array(path)
        got = load_model_input(path, 64)
        assert (got.height, got.width) == full.shape[:2], path.name
        assert torch.equal(_normalised(got.resized), preprocess_image(full, 64)), path.name


def test_fast_decode_keeps_the_full_size_and_orientation(tmp_path):
    """Draft decoding shrinks the JPEG, but the size reported (where the mask goes) is the photo's."""
    rng = np.random.default_rng(4)
    for orientation, expected in ((None, (600, 1000)), (6, (1000, 600)), (8, (1000, 600))):
        path = tmp_path / f"big{orientation}.jpg"
        save_jpeg(path, smooth(rng, 600, 1000), orientation=orientation)
        fast = load_model_input(path, 64, fast=True)
        exact = load_model_input(path, 64)
        assert (fast.height, fast.width) == (exact.height, exact.width) == expected
        assert fast.resized.shape == (64, 64, 3)
        # Close to the exact input (same picture), not equal (a different decode).
        diff = np.abs(fast.resized.astype(int) - exact.resized.astype(int))
        assert diff.mean() < 4 and diff.any()
    # A square draft must not hide the rotation: 1000x999 decodes at 1/2 as 500x500.
    path = tmp_path / "squareish.jpg"
    save_jpeg(path, smooth(rng, 999, 1000), orientation=6)
    fast = load_model_input(path, 64, fast=True)
    assert (fast.height, fast.width) == (1000, 999)


def test_fast_decode_reads_half_size_at_most_and_never_below_the_model_size(tmp_path):
    """What libjpeg really decodes under --fast-decode: half size (odd sides included), never a
    quarter, and the full photo when a half would not cover the model size."""
    from PIL import Image

    from sst_desktop.data.images import _fast_decode_size

    rng = np.random.default_rng(8)
    cases = [
        ((1024, 768), 256, (512, 384)),  # half, not a quarter (256 x 192 would be too small)
        ((1025, 769), 256, (513, 385)),  # odd sides: still half (libjpeg rounds the half up)
        ((1023, 767), 128, (512, 384)),
        ((700, 500), 256, (700, 500)),  # half (350 x 250) would not cover 256: full size
        ((999, 1000), 64, (500, 500)),
    ]
    for (width, height), size, decoded in cases:
        path = tmp_path / f"p{width}x{height}.jpg"
        save_jpeg(path, smooth(rng, height, width))
        with Image.open(path) as im:
            im.draft("RGB", _fast_decode_size(width, height, size))
            im.load()
            assert im.size == decoded, (width, height, size)


def test_compose_id_mask_equals_the_arg_max_rule():
    """The uint8 per-object rule equals the arg-max rule, ties, zeros and NaN included."""
    import torch

    gen = torch.Generator().manual_seed(0)
    for num in (1, 2, 3, 5):
        logits = torch.randn(num, 37, 53, generator=gen)
        # Quantise so that equal maxima (ties) and exact zeros occur often.
        logits = torch.round(logits * 2) / 2
        logits[0, 0, :5] = float("nan")
        if num > 1:
            logits[num - 1, 1, :5] = float("nan")
        ids = [3, 7, 9, 200, 255][:num]
        assert torch.isnan(logits).any() and (logits == 0).any()
        np.testing.assert_array_equal(compose_id_mask(logits, ids), old_compose(logits, ids))


def test_numpy_rule_on_finite_logits_equals_compose_id_mask():
    """The NumPy rule used along object boundaries gives compose_id_mask's IDs on finite
    logits: ties, exact and negative zeros, strided views of a larger array."""
    import torch

    from sst_desktop.engine.certain import compose_finite

    gen = torch.Generator().manual_seed(5)
    for num in (1, 2, 3, 5):
        logits = torch.round(torch.randn(num, 40, 61, generator=gen) * 2) / 2
        logits[:, 3, :7] = -0.0
        logits[:, 4, :7] = 0.0
        ids = [3, 7, 9, 200, 255][:num]
        view = logits.numpy()[:, 2:37:2, 5:59]  # non-contiguous, as a region of a photo
        assert not view.flags.c_contiguous
        expected = compose_id_mask(torch.from_numpy(np.ascontiguousarray(view)), ids)
        np.testing.assert_array_equal(compose_finite(view, ids), expected, err_msg=str(num))


def test_review_from_counts_equals_review_of_the_mask():
    masks = [
        np.zeros((5, 6), np.uint8),
        np.ones((20, 20), np.uint8),
        np.pad(np.full((8, 8), 2, np.uint8), 1),
        np.arange(30, dtype=np.uint8).reshape(5, 6) % 3,
        np.zeros((0, 4), np.uint8),
    ]
    for mask in masks:
        for expected in (set(), {1}, {1, 2}, {4}):
            assert review_counts(id_counts(mask), expected) == review_mask(mask, expected)


def test_fast_png_level_keeps_the_pixels(tmp_path):
    mask = (np.arange(200 * 300, dtype=np.uint32).reshape(200, 300) // 997 % 5).astype(np.uint8)
    write_mask(tmp_path / "default.png", mask)
    write_mask(tmp_path / "fast.png", mask, compress_level=1)
    np.testing.assert_array_equal(read_mask(tmp_path / "fast.png"), mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "default.png"), mask)
    with Image.open(tmp_path / "fast.png") as im:
        assert im.mode == "L"


def test_fast_png_encoder_keeps_the_pixels_and_is_smaller(tmp_path):
    """Predicted masks (OpenCV, no filter, run-length zlib): the same pixels in an "L" PNG for
    smooth and noisy masks and every ID up to 255; masks of regions are no larger than with
    Pillow's default (a ramp of every ID, which row filters suit, may be)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:300, :400]
    smooth_mask = ((((yy - 150) / 90.0) ** 2 + ((xx - 180) / 120.0) ** 2) <= 1).astype(np.uint8)
    smooth_mask[(xx > 300) & (yy < 100)] = 2
    noisy = smooth_mask.copy()
    spots = rng.random(noisy.shape) < 0.02
    noisy[spots] = rng.integers(0, 256, int(spots.sum()))
    every_id = np.arange(256, dtype=np.uint8).repeat(3)[None].repeat(5, axis=0)
    for name, mask in (("smooth", smooth_mask), ("noisy", noisy), ("ids", every_id)):
        staged = stage_prediction(tmp_path / f"{name}.png", mask)
        staged.commit()
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.mode == "L" and im.format == "PNG", name
        np.testing.assert_array_equal(read_mask(tmp_path / f"{name}.png"), mask, err_msg=name)
        if name != "ids":
            write_mask(tmp_path / f"{name}-default.png", mask)
            size = (tmp_path / f"{name}.png").stat().st_size
            assert size <= (tmp_path / f"{name}-default.png").stat().st_size, name


def test_decided_cells_give_the_mask_of_the_whole_image_rule(monkeypatch):
    """Composing only the undecided cells (object boundaries) gives, pixel for pixel, the ID rule
    over all upsampled logits: smooth and noisy logits, exact ties and zeros, 1-4 objects, shapes
    that do not divide; a NaN falls back to the whole-image rule."""
    import torch
    import torch.nn.functional as F

    from sst_desktop.engine import certain, postprocess

    monkeypatch.setattr(postprocess, "DECIDED_CELLS_MIN_PIXELS", 0)
    gen = torch.Generator().manual_seed(3)
    decided_somewhere = False
    counted_from_cells = 0
    for trial in range(24):
        num = 1 + trial % 4
        h, w = (int(v) for v in torch.randint(3, 40, (2,), generator=gen))
        height, width = h + int(torch.randint(1, 400, (1,))), w + int(torch.randint(1, 400, (1,)))
        smooth = F.interpolate(
            torch.randn(1, num, 3, 3, generator=gen) * 4, size=(h, w), mode="bilinear"
        )[0]
        low = smooth + 0.05 * torch.randn(num, h, w, generator=gen)
        if trial % 3 == 0:  # quantised: ties between objects and exact zeros
            low = torch.round(low * 2) / 2
        if trial % 5 == 0 and num > 1:
            low[1] = low[0]
        if trial == 23:
            low[0, 0, 0] = float("nan")
        low = low[:, None].float().contiguous()
        ids = sorted(torch.randperm(255, generator=gen)[:num].add(1).tolist())
        cells = certain.cell_ids(low[:, 0].numpy(), ids) if trial != 23 else None
        if cells is not None:
            decided_somewhere |= bool((cells != certain.UNDECIDED).any())
        prep = postprocess.PreparedTarget("t", height, width)
        result = postprocess._finish_target(prep, low, [0.0] * num, ids, False)
        full = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
        expected = compose_id_mask(full[:, 0], ids)
        np.testing.assert_array_equal(result.mask, expected, err_msg=str(trial))
        if cells is not None:  # counted from the cells' sizes and the composed regions
            assert result.id_counts == id_counts(expected), trial
            counted_from_cells += 1
        else:  # the NaN fallback leaves counting to the writer
            assert result.id_counts is None
    assert decided_somewhere and counted_from_cells == 23


def test_batched_post_processing_equals_one_target_at_a_time(monkeypatch):
    """Targets of equal size upsampled and composed in one call (split under the element cap)
    give the masks and scores of finishing them one by one."""
    import torch

    from sst_desktop.engine import postprocess

    gen = torch.Generator().manual_seed(1)
    sizes = [(48, 64), (30, 50), (48, 64), (48, 64), (64, 64), (30, 50), (48, 64)]
    good = [postprocess.PreparedTarget(f"t{i}", h, w) for i, (h, w) in enumerate(sizes)]
    obj_ids = [2, 5, 9]
    low_res = torch.randn(len(good), len(obj_ids), 1, 16, 16, generator=gen)
    low_res[1, 0, 0, :3, :3] = float("nan")
    scores = torch.randn(len(good), len(obj_ids), generator=gen).tolist()
    one_by_one = [
        postprocess.finish(p, low_res[i], scores[i], obj_ids, False) for i, p in enumerate(good)
    ]
    # A cap of two 48x64 targets: the four of that size go in two calls (batched on the CPU
    # here, as on an accelerator).
    monkeypatch.setattr(postprocess, "POST_BATCH_ELEMENTS", 2 * len(obj_ids) * 48 * 64)
    monkeypatch.setattr(postprocess, "_post_batches_on", lambda device_type: True)
    calls = []
    real = postprocess._compose_same_size
    monkeypatch.setattr(
        postprocess,
        "_compose_same_size",
        lambda *args: calls.append(len(args[1])) or real(*args),
    )
    for defer in (False, True):
        batched = postprocess.finish_batch(
            good, low_res, scores, obj_ids, False, defer_single=defer
        )
        batched = [r() if callable(r) else r for r in batched]
        for expected, got in zip(one_by_one, batched, strict=True):
            assert got.key == expected.key and got.ok
            np.testing.assert_array_equal(got.mask, expected.mask, err_msg=got.key)
            assert got.object_scores == expected.object_scores
            if got.key == "t4":  # alone in its size: finished on its own, the writer counts
                assert got.id_counts is None
            else:  # counted in the batch call that made the masks
                assert got.id_counts == id_counts(expected.mask), got.key
    # Per pass: the four 48x64 in two calls of two, the two 30x50 in one, the 64x64 alone.
    assert calls == [2, 2, 2] * 2

    # A device that cannot count uint8 masks: the same masks, counted later by the writer.
    def no_bincount(*args, **kwargs):
        raise NotImplementedError("bincount is not implemented for 'Byte' here")

    monkeypatch.setattr(torch, "bincount", no_bincount)
    alone = []
    real_finish = postprocess.finish
    monkeypatch.setattr(
        postprocess,
        "finish",
        lambda prep, *args: alone.append(prep.key) or real_finish(prep, *args),
    )
    uncounted = postprocess.finish_batch(good, low_res, scores, obj_ids, False)
    for expected, got in zip(one_by_one, uncounted, strict=True):
        np.testing.assert_array_equal(got.mask, expected.mask, err_msg=got.key)
        assert got.id_counts is None
    assert alone == ["t4"]  # the batches kept their masks; only the lone target went alone


def test_mask_writer_stays_within_its_bound_and_keeps_the_order():
    """At most max_pending jobs in flight; outcomes come back in submission order, errors too."""
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    rng = np.random.default_rng(0)

    def job(i: int):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(float(rng.uniform(0, 0.01)))  # jobs finish out of order
        with lock:
            in_flight -= 1
        if i == 5:
            raise OSError("disk full")
        return i * 10

    outcomes = []
    with MaskWriter(workers=3, max_pending=4) as writer:
        for i in range(20):
            if i == 7:
                outcomes += writer.done(str(i), error=ImageError("unreadable"))
            else:
                outcomes += writer.submit(str(i), lambda i=i: job(i))
            assert len(writer._pending) <= 4
        outcomes += writer.drain()
    assert writer.peak_pending <= 4 and peak <= 3
    assert [key for key, _, _ in outcomes] == [str(i) for i in range(20)]
    by_key = {key: (value, error) for key, value, error in outcomes}
    assert by_key["3"] == (30, None)
    assert isinstance(by_key["5"][1], OSError) and isinstance(by_key["7"][1], ImageError)


def test_timings_table_names_every_stage_and_the_busiest():
    times = StageTimes({"read": 2, "write": 1})
    with times.measure():
        time.sleep(0.01)
    times.add("read", 0.004, 2, cpu_s=0.003)
    times.add("model", 0.006, 2, cpu_s=0.001)
    times.add("post", 0.001, 2, cpu_s=0.001)
    times.add("write", 0.002, 2, cpu_s=0.002)
    times.cpu_s = 0.016  # the process's CPU over the run
    data = times.to_dict(images=2)
    assert data["stages"]["read"]["ms_per_image"] == 2.0
    assert data["stages"]["read"]["cpu_ms_per_image"] == 1.5
    assert data["stages"]["read"]["workers"] == 2
    # The model's CPU: the process's less the other stages' (its thread alone misses its pool).
    assert data["stages"]["model"]["cpu_ms_per_image"] == 5.0
    lines = format_timings(data)
    assert lines[0].startswith("Timings: 2 image(s)")
    assert [line.split()[0] for line in lines[2:6]] == ["read", "model", "post", "write"]
    assert lines[3].split()[2] == "5.0*"
    assert lines[6].startswith("  CPU outside the model: 3 ms per image")
    assert lines[-2].startswith("  stages overlap: 0.01 s of stage work in ")
    assert lines[-1].startswith("  busiest stage: model")
    assert format_timings(StageTimes({}).to_dict(images=0)) == [
        "Timings: no image was predicted in this run."
    ]


def test_pillow_block_settings_last_until_the_last_overlapping_run_leaves():
    """Runs overlapping in one process share Pillow's (process-wide) block settings: the first
    run's end does not take them from the second, and the last puts back the originals."""
    from PIL import Image

    from sst_desktop.run.pipeline import pillow_block_cache

    core = Image.core
    before = (core.get_blocks_max(), core.get_block_size())
    first, second = pillow_block_cache(6, 64 << 20), pillow_block_cache(3, 32 << 20)
    first.__enter__()
    assert (core.get_blocks_max(), core.get_block_size()) == (
        max(before[0], 6),
        max(before[1], 64 << 20),
    )
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second goes on
    assert core.get_blocks_max() >= 6 and core.get_block_size() >= 64 << 20
    second.__exit__(None, None, None)
    assert (core.get_blocks_max(), core.get_block_size()) == before


def test_pipeline_sizes_scale_with_the_cores():
    sizes = PipelineSizes.for_machine(batch_size=4, cores=16)
    assert (sizes.read_workers, sizes.write_workers) == (16, 8)
    assert sizes.read_ahead >= 8 and sizes.write_pending == 16
    small = PipelineSizes.for_machine(batch_size=1, cores=1)
    assert small.read_workers == small.write_workers == 1


# --------------------------------------------------------------------------- with the model


@pytest.mark.parametrize(("batch_size", "cells"), [(1, False), (3, False), (1, True)])
def test_run_masks_equal_the_previous_pipeline(
    tmp_path, sam2_checkpoint, handle, batch_size, cells, monkeypatch
):
    """Pixels of every PNG written equal the previous path's masks (mixed sizes, EXIF-rotated
    JPEGs, a corrupt frame in the middle), and so do the review flags. With `cells`, every
    target goes the large-photo way (ID mask and pixel counts from the low-res cells)."""
    from sst_desktop.engine import postprocess

    if cells:
        monkeypatch.setattr(postprocess, "DECIDED_CELLS_MIN_PIXELS", 0)
        counted = []
        real = postprocess.certain.compose_decided
        monkeypatch.setattr(
            postprocess.certain,
            "compose_decided",
            lambda *args: counted.append(1) or real(*args),
        )
    spec, pks = mixed_project(tmp_path, sam2_checkpoint)
    summary = run_inference(Project.open(spec), RunOptions(batch_size=batch_size))
    assert [f["pk"] for f in summary.failed] == ["a4"]
    assert "a4.png" in summary.failed[0]["reason"]
    assert summary.written_pks == [pk for pk in pks if pk != "a4"]

    memory = reference_memory(handle, spec)
    expected = previous_pipeline(
        handle, memory, [(pk, image_path(spec, pk)) for pk in pks], batch_size
    )
    assert sorted(expected) == sorted(summary.written_pks)
    flagged = {item["pk"]: item["reasons"] for item in summary.flagged}
    common = {1, 2}
    for pk, mask in expected.items():
        written = read_mask(spec.parent / "pred_masks" / f"{pk}.png")
        assert written.shape == mask.shape, pk
        np.testing.assert_array_equal(written, mask, err_msg=pk)
        assert flagged.get(pk, []) == review_mask(mask, common), pk
    assert summary.timings["images"] == len(expected)
    if cells:
        assert len(counted) == len(expected)


def test_equal_sizes_in_a_batch_equal_the_previous_pipeline(tmp_path, sam2_checkpoint, handle):
    """Targets of one size (post-processed together) and a rotated one of the same displayed
    size: the PNGs written equal the previous path's masks."""
    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(72, 56)] * 6}, references={"a": 1}
    )
    rng = np.random.default_rng(9)
    for index in range(1, 6):
        if index == 3:  # stored sideways, shown upright at 72x56
            save_jpeg(image_path(spec, "a3"), smooth(rng, 72, 56), orientation=6)
        else:
            save_jpeg(image_path(spec, f"a{index}"), smooth(rng, 56, 72))
    pks = [f"a{i}" for i in range(1, 6)]
    summary = run_inference(Project.open(spec), RunOptions(batch_size=4))
    assert summary.written_pks == pks
    memory = reference_memory(handle, spec)
    expected = previous_pipeline(handle, memory, [(pk, image_path(spec, pk)) for pk in pks], 4)
    for pk in pks:
        written = read_mask(spec.parent / "pred_masks" / f"{pk}.png")
        np.testing.assert_array_equal(written, expected[pk], err_msg=pk)


def test_reference_memory_from_model_inputs_equals_from_arrays(tmp_path, handle):
    """References given at the model size (as the sweep loads them) encode the same memory."""
    import torch

    from sst_desktop.engine.propagation import build_reference_memory

    rng = np.random.default_rng(12)
    path = tmp_path / "ref.jpg"
    save_jpeg(path, smooth(rng, 50, 90), orientation=8)
    full = load_image_array(path)
    mask = np.zeros(full.shape[:2], np.uint8)
    mask[10:40, 5:30] = 1
    mask[50:80, 20:45] = 4
    small = load_model_input(path, handle.image_size)
    a = build_reference_memory(handle, [(full, mask)])
    b = build_reference_memory(handle, [(small, mask)])
    assert a.obj_ids == b.obj_ids == [1, 4]
    for x, y in zip(a.cond_outputs, b.cond_outputs, strict=True):
        for key in ("maskmem_features", "obj_ptr", "object_score_logits"):
            assert torch.equal(x[key], y[key]), key
    with pytest.raises(Exception, match="mask is 90x50 but its image is 50x90"):
        build_reference_memory(handle, [(small, mask.T.copy())])


def test_read_ahead_is_bounded(handle):
    """propagate never has more targets read than its read-ahead, the model's queue and the
    batch in hand allow, however long the group (memory stays flat)."""
    from sst_desktop.engine.propagation import build_reference_memory, propagate

    rng = np.random.default_rng(8)
    image = smooth(rng, 48, 64)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:40] = 1
    memory = build_reference_memory(handle, [(image, mask)])
    read = 0
    lock = threading.Lock()

    def source():
        nonlocal read
        with lock:
            read += 1
        return image

    batch, ahead = 2, 3
    # read ahead + the batch being predicted + 2 batches queued + the batch being consumed
    bound = ahead + batch + 2 * batch + batch + batch
    most = 0
    results = propagate(
        handle,
        memory,
        ((i, source) for i in range(40)),
        batch_size=batch,
        prefetch=ahead,
        loader_threads=2,
    )
    for consumed, result in enumerate(results, start=1):
        assert result.ok
        with lock:
            most = max(most, read - consumed)
    assert read == 40 and most <= bound


def test_cancel_mid_run_leaves_only_complete_files(tmp_path, sam2_checkpoint):
    """Cancelling after the second mask: exactly the reported masks exist, each complete, no temp
    file is left, and the next run writes the rest."""
    spec = make_project(
        tmp_path, sam2_checkpoint, groups={"a": [(64, 48)] * 7}, references={"a": 1}
    )
    cancel = threading.Event()
    written: list[str] = []

    def sink(event):
        if event["type"] == "frame" and event["status"] == "written":
            written.append(event["pk"])
            if len(written) == 2:
                cancel.set()

    summary = run_inference(
        Project.open(spec), RunOptions(batch_size=2), on_event=sink, cancel=cancel
    )
    pred_dir = spec.parent / "pred_masks"
    assert summary.cancelled and summary.written_pks == written == ["a1", "a2"]
    assert sorted(p.stem for p in pred_dir.glob("*.png")) == written
    assert [p.name for p in pred_dir.iterdir() if p.name.startswith(".")] == []
    for pk in written:
        assert read_mask(pred_dir / f"{pk}.png", expected_size=(64, 48)).shape == (48, 64)
    rest = run_inference(Project.open(spec), RunOptions(batch_size=2))
    assert rest.written == 4 and rest.skipped == 2


def test_timings_flag_prints_the_stage_table(tmp_path, sam2_checkpoint):
    spec = make_project(tmp_path, sam2_checkpoint)
    out = run_cli("--infer", str(spec), "--timings", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Timings: 4 image(s)"))
    rows = lines[start + 2 : start + 6]
    assert [row.split()[0] for row in rows] == ["read", "model", "post", "write"]
    for row in rows:
        ms, cpu, workers, busy = row.split()[1:5]
        assert float(ms) > 0 and float(cpu.rstrip("*")) >= 0
        assert int(workers) >= 1 and busy.endswith("%")
    summary = json.loads(sorted((spec.parent / "runs").glob("*.json"))[-1].read_text())
    timings = summary["timings"]
    assert timings["images"] == summary["written"] == 4
    assert set(timings["stages"]) == {"read", "model", "post", "write"}
    # Each stage's CPU is its threads' own; the model's is the rest of the process's.
    outside = sum(timings["stages"][name]["cpu_s"] for name in ("read", "post", "write"))
    assert all(timings["stages"][name]["cpu_s"] > 0 for name in ("read", "post", "write"))
    assert timings["stages"]["model"]["cpu_s"] == pytest.approx(
        timings["cpu_s"] - outside, abs=0.003
    )
    assert lines[start + 6].startswith(f"  CPU outside the model: {1000 * outside / 4:.0f} ms")
    assert lines[start + 7].startswith("  stages overlap: ")
    assert lines[start + 8].startswith("  busiest stage: ")


def test_fast_decode_agrees_with_the_exact_path(tmp_path, sam2_checkpoint):
    """--fast-decode on large JPEGs: same files, masks agree on at least 99.5 % of pixels."""
    spec = make_project(tmp_path, sam2_checkpoint, groups={"a": [(64, 64)] + [(64, 48)] * 3})
    rng = np.random.default_rng(30)
    for index, orientation in ((1, None), (2, 6), (3, 3)):
        # 2560x1920 at model size 256: decoded at half size.
        save_jpeg(image_path(spec, f"a{index}"), smooth(rng, 1920, 2560), orientation=orientation)
    exact = run_inference(Project.open(spec), RunOptions())
    pred = spec.parent / "pred_masks"
    exact_masks = {pk: read_mask(pred / f"{pk}.png") for pk in exact.written_pks}
    fast = run_inference(Project.open(spec), RunOptions(overwrite=True, fast_decode=True))
    assert fast.written_pks == exact.written_pks == ["a1", "a2", "a3"]
    agreement = []
    for pk, mask in exact_masks.items():
        other = read_mask(pred / f"{pk}.png")
        assert other.shape == mask.shape
        agreement.append(float((other == mask).mean()))
    assert min(agreement) >= 0.995, agreement
