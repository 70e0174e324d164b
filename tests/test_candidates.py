"""Candidate masks (SAM2 automatic mask generator) and click refinement on the shared model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEST_IMAGE_SIZE

from sst_desktop.engine import candidates as cand
from sst_desktop.engine import mask_generator, sam2_model
from sst_desktop.engine.candidates import CandidateParams, Refiner, generate_candidates
from sst_desktop.errors import ImageError, UserError

# Random weights give low scores and near-duplicate masks: keep every mask (no score filter, NMS
# only for identical boxes) so there are many candidates to compare, and few prompts for speed.
LOOSE = dict(
    points_per_side=4,
    points_per_batch=8,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=1.0,
)


@pytest.fixture(scope="module")
def handle(sam2_checkpoint):
    return sam2_model.get_model(
        "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )


@pytest.fixture(autouse=True)
def low_res_bounds_everywhere(monkeypatch):
    """The test images are small (few output pixels per low-res cell, where the generator would
    upsample instead): make it take the low-res bounds path, so the equivalence tests cover it."""
    monkeypatch.setattr(mask_generator, "BOUNDS_MIN_PIXELS_PER_CELL", 0)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth background with a few flat shapes: something for the generator to separate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 200 // w, yy * 200 // h, np.full((h, w), 90)], axis=2).astype(np.uint8)
    for _ in range(4):
        cy, cx, r = rng.integers(h // 5, 4 * h // 5), rng.integers(w // 5, 4 * w // 5), h // 7
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[disk] = rng.integers(0, 256, 3)
    return img


def test_defaults_are_the_original_gui_settings():
    p = CandidateParams()
    assert (p.points_per_side, p.pred_iou_thresh, p.stability_score_thresh) == (48, 0.88, 0.95)
    assert (p.box_nms_thresh, p.crop_n_layers, p.min_mask_region_area, p.max_side) == (
        0.7,
        0,
        0,
        2048,
    )
    assert CandidateParams.from_dict(p.to_dict()) == p
    assert CandidateParams.from_dict({"points_per_side": "16"}).points_per_side == 16


@pytest.mark.parametrize(
    "bad",
    [
        {"points_per_side": 0},
        {"pred_iou_thresh": 2},
        {"points_per_side": 4.5},
        {"max_side": "x"},
        {"use_m2m": "yes"},
        {"box_nms_thresh": float("nan")},
    ],
)
def test_bad_params_are_user_errors(bad):
    with pytest.raises(UserError, match=next(iter(bad))):
        CandidateParams.from_dict(bad)


def test_unknown_param_is_named():
    with pytest.raises(UserError, match="points_per_sid'.*points_per_side"):
        CandidateParams.from_dict({"points_per_sid": 4})


def _upstream(handle, image: np.ndarray, settings: dict) -> list[dict]:
    """Upstream's generator on the same model and pixels, then the app's clean-up and order."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    params = CandidateParams(**settings)
    generator = SAM2AutomaticMaskGenerator(
        handle.model,
        **{
            k: v
            for k, v in params.to_dict().items()
            if k not in ("max_side", "min_mask_region_area")
        },
        output_mode="binary_mask",
    )
    cand._set_feature_sizes(generator.predictor, TEST_IMAGE_SIZE)
    records = generator.generate(image)
    if params.min_mask_region_area:
        keep, masks = cand.clean_small_regions(
            [r["segmentation"] for r in records],
            min_area=params.min_mask_region_area,
            nms_thresh=params.box_nms_thresh,
        )
        records = [dict(records[i], segmentation=masks[i]) for i in keep]
        for r in records:
            r["area"] = int(r["segmentation"].sum())
    # Ours drops empty masks and sorts by area (stable, so ties keep upstream's order).
    return sorted((r for r in records if r["area"] > 0), key=lambda r: -r["area"])


def _assert_same(ours: list, theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for c, r in zip(ours, theirs, strict=True):
        assert np.array_equal(c.mask, r["segmentation"])
        assert c.area == r["area"] == int(c.mask.sum())
        assert c.predicted_iou == pytest.approx(r["predicted_iou"], abs=1e-6)
        assert c.stability_score == pytest.approx(r["stability_score"], abs=1e-6)
        assert c.point == pytest.approx(tuple(r["point_coords"][0]), abs=1e-4)
        ys, xs = np.nonzero(r["segmentation"])
        assert c.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


# Settings that exercise every path of upstream's generator: a last batch shorter than the others,
# one mask per point, the mask-to-mask refinement pass and the small-region clean-up. Random
# weights give noisy whole-image masks that any real threshold or NMS reduces to one or none, so
# score filters, duplicate removal and crop layers are compared on smooth masks further down.
EQUIVALENCE_CASES = {
    "loose": dict(LOOSE),
    "single-mask": dict(LOOSE, multimask_output=False, points_per_batch=5),
    "m2m": dict(LOOSE, use_m2m=True, points_per_side=3, pred_iou_thresh=0.02),
    "min-area": dict(LOOSE, min_mask_region_area=150),
    # Upstream decodes 12 + 4 prompts; ours a small first step of 8, then 8 (what stays the same).
    "first-step": dict(LOOSE, points_per_batch=12),
}


def blob_decoder(handle, monkeypatch) -> None:
    """Test double: the mask decoder returns smooth disks around each prompt (localised masks,
    as real weights give), with scores that differ per prompt, so crops and NMS have work."""
    import torch

    model = handle.model
    seen = {}
    prompt_forward = model.sam_prompt_encoder.forward

    def prompt(points, boxes, masks):
        seen["points"] = points[0]
        return prompt_forward(points=points, boxes=boxes, masks=masks)

    def decoder(image_embeddings, multimask_output, **_):
        xy = seen["points"][:, 0, :] / 4  # model-input pixels -> low-res pixels
        low = TEST_IMAGE_SIZE // 4
        yy, xx = torch.meshgrid(torch.arange(low), torch.arange(low), indexing="ij")
        dist = (
            (xx[None] + 0.5 - xy[:, 0, None, None]) ** 2
            + (yy[None] + 0.5 - xy[:, 1, None, None]) ** 2
        ).sqrt()
        radii = torch.tensor([4.0, 7.0, 11.0] if multimask_output else [7.0])
        logits = (radii[None, :, None, None] - dist[:, None]) * 2.0
        iou = torch.frac(xy[:, :1] * 0.37 + xy[:, 1:] * 0.61 + radii[None] * 0.1) * 0.5 + 0.5
        n = xy.shape[0]
        return logits, iou, torch.zeros(n, 1, 256), torch.zeros(n, 1)

    monkeypatch.setattr(model.sam_prompt_encoder, "forward", prompt)
    monkeypatch.setattr(model.sam_mask_decoder, "forward", decoder)


@pytest.mark.parametrize("case", sorted(EQUIVALENCE_CASES))
def test_equals_upstream_generator(handle, case):
    settings = EQUIVALENCE_CASES[case]
    image = _image(120, 160)
    theirs = _upstream(handle, image, settings)
    ours = generate_candidates(handle, image, settings)
    _assert_same(ours, theirs)
    assert len(ours) >= 6, "too few masks to compare: the case proves nothing"


SMOOTH_CASES = {
    "smooth-nms": dict(
        points_per_side=6,
        points_per_batch=10,
        box_nms_thresh=0.5,
        pred_iou_thresh=0.6,
        stability_score_thresh=0.5,
    ),
    "smooth-crops": dict(
        points_per_side=6,
        points_per_batch=16,
        box_nms_thresh=0.7,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=1,
        crop_nms_thresh=0.5,
    ),
}


@pytest.mark.parametrize("case", sorted(SMOOTH_CASES))
def test_equals_upstream_with_smooth_masks(handle, monkeypatch, case):
    """Localised masks (decoder double): duplicate removal and the crop rules really act."""
    blob_decoder(handle, monkeypatch)
    settings = SMOOTH_CASES[case]
    image = _image(120, 160)
    theirs = _upstream(handle, image, settings)
    ours = generate_candidates(handle, image, settings)
    _assert_same(ours, theirs)
    prompts = settings["points_per_side"] ** 2 * 3 * (5 if settings.get("crop_n_layers") else 1)
    assert 6 <= len(ours) < prompts, "NMS must drop some masks and keep several"


def test_upsampling_path_equals_upstream_where_the_bounds_do_not_pay(handle, monkeypatch):
    """A low-res grid nearly as big as the output (or non-finite logits): every mask is upsampled
    with upstream's own computation instead of bounded, with the same result."""
    monkeypatch.setattr(mask_generator, "BOUNDS_MIN_PIXELS_PER_CELL", 16)
    blob_decoder(handle, monkeypatch)
    settings = SMOOTH_CASES["smooth-nms"]
    image = _image(120, 160)  # 4.7 output pixels per cell of the 64x64 low-res logits
    generator = mask_generator.MaskGenerator(handle, CandidateParams(**settings))
    list(generator.run(image))
    assert generator.bound_stats["masks"] == 0  # the bounds were never used
    _assert_same(generate_candidates(handle, image, settings), _upstream(handle, image, settings))
    torch = pytest.importorskip("torch")
    dense, sparse = torch.zeros(3, 64, 64), (480, 640)
    assert mask_generator.bounds_pay(dense, sparse)
    dense[1, 5, 7] = float("nan")
    assert not mask_generator.bounds_pay(dense, sparse)
    assert not mask_generator.bounds_pay(torch.zeros(3, 256, 256), sparse)


def test_masks_rejected_from_low_res_bounds_change_nothing(handle, monkeypatch):
    """A third of the masks can never be stable (flat logits): the low-res bounds reject them
    without upsampling, and the result is still upstream's, mask for mask."""
    from sst_desktop.engine.mask_generator import MaskGenerator

    blob_decoder(handle, monkeypatch)
    blobs = handle.model.sam_mask_decoder.forward

    def flat_first(**kwargs):
        logits, iou, tokens, scores = blobs(**kwargs)
        logits = logits.clone()
        logits[:, 0] = logits[:, 0].clamp(-0.5, 0.5)  # never above the upper cut (0 + 1)
        return logits, iou, tokens, scores

    monkeypatch.setattr(handle.model.sam_mask_decoder, "forward", flat_first)
    settings = dict(SMOOTH_CASES["smooth-nms"], pred_iou_thresh=0.0, stability_score_thresh=0.3)
    image = _image(120, 160)
    theirs = _upstream(handle, image, settings)
    ours = generate_candidates(handle, image, settings)
    _assert_same(ours, theirs)
    assert len(ours) >= 6
    generator = MaskGenerator(handle, CandidateParams(**settings))
    list(generator.run(image))
    stats = generator.bound_stats
    assert stats["rejected_by_bounds"] >= settings["points_per_side"] ** 2  # one per prompt
    assert stats["exact_pixels"] < stats["full_pixels"]  # the rejected were never upsampled


def test_crop_case_keeps_masks_from_several_crops(handle, monkeypatch):
    """The crop case is only a test of crops if masks of more than one crop survive."""
    from sst_desktop.engine.mask_generator import MaskGenerator

    blob_decoder(handle, monkeypatch)
    generator = MaskGenerator(handle, CandidateParams(**SMOOTH_CASES["smooth-crops"]))
    list(generator.run(_image(120, 160)))
    assert len({m.crop_box for m in generator.result()}) > 1


@pytest.fixture(scope="module")
def loose_run(handle):
    """One loose generation shared by several tests: (image, candidates, progress calls)."""
    image = _image(96, 128, seed=1)
    progress = []
    found = generate_candidates(
        handle, image, dict(LOOSE), progress=lambda d, t: progress.append((d, t))
    )
    return image, found, progress


def test_structure_sorting_and_scores(loose_run):
    image, found, progress = loose_run
    assert found, "loose thresholds must leave candidates"
    areas = [c.area for c in found]
    assert areas == sorted(areas, reverse=True)
    for c in found:
        assert c.mask.shape == (96, 128) and c.mask.dtype == bool
        assert 0.0 <= c.predicted_iou <= 1.0 and 0.0 <= c.stability_score <= 1.0
        ys, xs = np.nonzero(c.mask)
        assert c.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert 0 <= c.point[0] <= 128 and 0 <= c.point[1] <= 96
    assert progress == [(1, 2), (2, 2)]  # 16 prompts in batches of 8


def test_params_reach_the_generator(handle, loose_run):
    image, loose, _ = loose_run
    assert generate_candidates(handle, image, dict(LOOSE, pred_iou_thresh=1.0)) == []
    threshold = float(np.median([c.stability_score for c in loose])) + 1e-6
    strict = generate_candidates(handle, image, dict(LOOSE, stability_score_thresh=threshold))
    assert all(c.stability_score >= threshold for c in strict)
    assert len(loose) > len(strict)
    progress = []
    generate_candidates(
        handle,
        image,
        dict(LOOSE, points_per_side=3, points_per_batch=4),
        progress=lambda d, t: progress.append(t),
    )
    assert progress == [3, 3, 3]  # 9 prompts in batches of 4
    # Tighter NMS keeps fewer overlapping masks.
    assert len(generate_candidates(handle, image, dict(LOOSE, box_nms_thresh=0.7))) < len(loose)


def test_large_image_is_downscaled_and_masks_come_back_full_size(handle):
    image = _image(150, 300, seed=3)
    params = CandidateParams(**LOOSE, max_side=100)
    found = generate_candidates(handle, image, params)
    assert found
    # Same as running the generator on the downscaled image and upsampling (nearest).
    small = cand._downscale(image, 100)
    assert small.shape == (50, 100, 3)
    direct = generate_candidates(handle, small, CandidateParams(**LOOSE))
    assert len(direct) == len(found)
    for big, little in zip(found, direct, strict=True):
        assert big.mask.shape == (150, 300)
        assert np.array_equal(big.mask, np.repeat(np.repeat(little.mask, 3, axis=0), 3, axis=1))
        assert big.area == int(big.mask.sum()) == 9 * little.area
        assert big.predicted_iou == little.predicted_iou


def test_cancel_from_progress_stops_generation(handle):
    class Stop(Exception):
        pass

    def progress(done, total):
        raise Stop

    with pytest.raises(Stop):
        generate_candidates(handle, _image(64, 64), dict(LOOSE), progress=progress)
    assert handle.lock.acquire(blocking=False)  # the model lock was released
    handle.lock.release()


def test_image_validation(handle):
    with pytest.raises(ImageError, match="uint8"):
        generate_candidates(handle, np.zeros((32, 32, 3), np.float32), dict(LOOSE))
    with pytest.raises(ImageError, match="shape"):
        generate_candidates(handle, np.zeros((32, 32, 2), np.uint8), dict(LOOSE))
    gray = cand.as_rgb_array(np.zeros((5, 6), np.uint8))
    assert gray.shape == (5, 6, 3)


def test_small_region_cleanup():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True  # a 100-px square...
    mask[6, 6] = False  # ...with a 1-px hole
    mask[15, 15] = True  # a 1-px island
    mask[16, 16] = True  # diagonal neighbour: same 8-connected island (2 px)
    filled, changed = cand.remove_small_regions(mask, 3, "holes")
    assert changed and filled[6, 6] and filled.sum() == mask.sum() + 1
    cleaned, changed = cand.remove_small_regions(filled, 3, "islands")
    assert changed and not cleaned[15, 15] and not cleaned[16, 16] and cleaned.sum() == 100
    same, changed = cand.remove_small_regions(mask, 2, "islands")  # island of 2 is not < 2
    assert not changed and np.array_equal(same, mask)
    lone = np.zeros((5, 5), bool)
    lone[2, 2] = True
    kept, _ = cand.remove_small_regions(lone, 10, "islands")
    assert kept[2, 2]  # never removes every island


def test_connected_components_match_flood_fill():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 50)) < 0.45
    rows, starts, ends, comp = cand.connected_components(mask)
    labels = np.full(mask.shape, -1)
    for r, s, e, c in zip(rows, starts, ends, comp, strict=True):
        labels[r, s:e] = c
    # Reference: breadth-first flood fill with 8-connectivity.
    ref = np.full(mask.shape, -1)
    n = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if ref[y, x] >= 0:
            continue
        stack = [(y, x)]
        ref[y, x] = n
        while stack:
            cy, cx = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < 40 and 0 <= nx < 50 and mask[ny, nx] and ref[ny, nx] < 0:
                        ref[ny, nx] = n
                        stack.append((ny, nx))
        n += 1
    assert comp.max() + 1 == n
    pairs = set(zip(labels[mask].tolist(), ref[mask].tolist(), strict=True))
    assert len(pairs) == n  # a one-to-one relabelling


def test_min_mask_region_area_cleans_candidates(handle, loose_run):
    image, raw, _ = loose_run
    cleaned = generate_candidates(handle, image, dict(LOOSE, min_mask_region_area=200))
    assert cleaned
    for c in cleaned:
        for mode in ("holes", "islands"):
            _, changed = cand.remove_small_regions(c.mask, 200, mode)
            assert not changed
    assert {c.area for c in cleaned} != {c.area for c in raw}


def test_refiner_caches_embedding_and_clicks_change_result(handle, monkeypatch):
    calls = []
    original = handle.model.forward_image
    monkeypatch.setattr(handle.model, "forward_image", lambda x: (calls.append(1), original(x))[1])
    image = _image(90, 120, seed=5)
    refiner = Refiner(handle, max_images=2)
    refiner.set_image("a", image)
    refiner.set_image("a", image)
    first = refiner.predict("a", points=[(30, 40)], labels=[1])
    second = refiner.predict("a", points=[(30, 40), (100, 70)], labels=[1, 0])
    assert len(calls) == 1 and refiner.encodings == 1
    assert first.mask.shape == (90, 120) and first.mask.dtype == bool
    assert first.low_res_logits.shape == (1, TEST_IMAGE_SIZE // 4, TEST_IMAGE_SIZE // 4)
    assert np.isfinite(first.score)
    assert not np.array_equal(first.low_res_logits, second.low_res_logits)
    # Same prompt again: same answer, still no new encoding.
    again = refiner.predict("a", points=[(30, 40)], labels=[1])
    assert np.array_equal(again.low_res_logits, first.low_res_logits)
    # Feeding the previous logits back and a box are accepted.
    chained = refiner.predict("a", points=[(30, 40)], labels=[1], mask_input=first.low_res_logits)
    boxed = refiner.predict("a", box=[10, 10, 60, 50])
    from_mask = refiner.predict("a", mask_input=first.mask | True)
    for result in (chained, boxed, from_mask):
        assert result.mask.shape == (90, 120)
    assert len(calls) == 1
    # LRU of two images: a third evicts the oldest, which then needs encoding again.
    refiner.set_image("b", _image(50, 70, seed=6))
    refiner.set_image("c", _image(40, 40, seed=7))
    assert not refiner.has_image("a") and refiner.has_image("c")
    assert refiner.predict("b", points=[(10, 10)]).mask.shape == (50, 70)
    assert len(calls) == 3


def test_refiner_matches_upstream_image_predictor(handle):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = _image(90, 120, seed=8)
    refiner = Refiner(handle)
    refiner.set_image(7, image)
    ours = refiner.predict(7, points=[(50, 20), (80, 60)], labels=[1, 0], multimask=True)
    predictor = SAM2ImagePredictor(handle.model)
    cand._set_feature_sizes(predictor, TEST_IMAGE_SIZE)
    predictor.set_image(image)
    masks, scores, low = predictor.predict(
        point_coords=np.array([(50, 20), (80, 60)], np.float32),
        point_labels=np.array([1, 0]),
        multimask_output=True,
    )
    best = int(np.argmax(scores))
    assert np.array_equal(ours.mask, masks[best] > 0)
    assert ours.score == pytest.approx(float(scores[best]))
    assert np.allclose(ours.low_res_logits[0], low[best])


def test_refiner_input_errors(handle):
    refiner = Refiner(handle)
    with pytest.raises(UserError, match="set_image"):
        refiner.predict("missing", points=[(1, 1)])
    refiner.set_image("k", _image(32, 32))
    with pytest.raises(UserError, match="at least one click"):
        refiner.predict("k")
    with pytest.raises(UserError, match="2 clicks but 1 labels"):
        refiner.predict("k", points=[(1, 1), (2, 2)], labels=[1])
    with pytest.raises(UserError, match="4 numbers"):
        refiner.predict("k", box=[1, 2, 3])
    with pytest.raises(UserError, match="low_res_logits"):
        refiner.predict("k", mask_input=np.zeros((1, 10, 10), np.float32))


def test_stream_yields_each_batch_then_the_final_list(handle):
    image = _image(96, 128, seed=1)
    items = list(cand.stream_candidates(handle, image, dict(LOOSE)))
    updates, final = items[:-1], items[-1]
    assert [(u.done, u.total) for u in updates] == [(1, 2), (2, 2)]
    first = updates[0].candidates()
    assert first and all(c.mask.shape == (96, 128) for c in first)
    # Candidates after the last batch are the final ones (no clean-up asked), same ids.
    assert [c.uid for c in updates[-1].candidates()] == [c.uid for c in final]
    direct = generate_candidates(handle, image, dict(LOOSE))
    assert len(direct) == len(final)
    for a, b in zip(direct, final, strict=True):
        assert np.array_equal(a.mask, b.mask) and a.predicted_iou == b.predicted_iou


def test_generation_and_clicks_share_one_embedding(handle, monkeypatch):
    calls = []
    original = handle.model.forward_image
    monkeypatch.setattr(handle.model, "forward_image", lambda x: (calls.append(1), original(x))[1])
    image = _image(90, 120, seed=5)
    alone = generate_candidates(handle, image, dict(LOOSE))
    assert len(calls) == 1
    refiner = Refiner(handle)
    shared = generate_candidates(handle, image, dict(LOOSE), refiner=refiner, key="img")
    assert len(calls) == 2 and refiner.has_image("img") and refiner.encodings == 1
    click = refiner.predict("img", points=[(30, 40)], labels=[1])
    again = generate_candidates(handle, image, dict(LOOSE), refiner=refiner, key="img")
    assert len(calls) == 2  # neither the click nor a second generation encoded again
    assert click.mask.shape == (90, 120)
    for a, b, c in zip(alone, shared, again, strict=True):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.mask, c.mask)


def test_a_click_first_then_a_generation_encode_once_at_the_working_size(handle, monkeypatch):
    """The label screen's first click encodes at the project's working size, so a generation with
    the project's settings reuses it. A generation at another working size encodes again: its
    masks are defined on the image at that size (upstream's generator sees those pixels)."""
    calls = []
    original = handle.model.forward_image
    monkeypatch.setattr(handle.model, "forward_image", lambda x: (calls.append(1), original(x))[1])
    image = _image(90, 120, seed=6)
    refiner = Refiner(handle)
    settings = dict(LOOSE, max_side=64)  # the project's working size: smaller than the image
    refiner.set_image("img", image, max_side=settings["max_side"])
    refiner.predict("img", points=[(30, 40)], labels=[1])
    assert len(calls) == 1
    generate_candidates(handle, image, settings, refiner=refiner, key="img")
    assert len(calls) == 1
    generate_candidates(handle, image, dict(settings, max_side=96), refiner=refiner, key="img")
    assert len(calls) == 2
    refiner.predict("img", points=[(30, 40)], labels=[1])  # the newest embedding serves clicks
    assert len(calls) == 2


def test_click_is_answered_while_a_generation_is_in_progress(handle):
    """A click between two prompt batches gets the model and the generation's embedding."""
    import threading

    image = _image(96, 128, seed=2)
    refiner = Refiner(handle)
    paused, resume = threading.Event(), threading.Event()
    out = {}

    def progress(done, total):
        if done == 1:
            paused.set()
            resume.wait(timeout=600)

    def generate():
        out["found"] = generate_candidates(
            handle, image, dict(LOOSE), progress=progress, refiner=refiner, key="k"
        )

    generation = threading.Thread(target=generate)
    generation.start()
    try:
        assert paused.wait(timeout=600), "the generation never reached its first batch"
        click = threading.Thread(
            target=lambda: out.setdefault("click", refiner.predict("k", points=[(20, 30)]))
        )
        click.start()
        click.join(timeout=600)
        # Still paused after batch 1: had the generation kept the model, the click would wait.
        assert not click.is_alive() and "click" in out and "found" not in out
    finally:
        resume.set()
        generation.join(timeout=600)
    assert out["found"] and refiner.encodings == 1
