"""Model loading: device choice, per-process cache, and a model identical to upstream's builder."""

from __future__ import annotations

import contextlib
import threading

import pytest
from conftest import TEST_CONFIG, TEST_IMAGE_SIZE

from sst_desktop.engine import sam2_model
from sst_desktop.errors import CheckpointError, UserError


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    sam2_model.clear_cache()
    yield
    sam2_model.clear_cache()


def test_resolve_device_auto_follows_availability():
    import torch

    expected = (
        "cuda" if torch.cuda.is_available() else ("mps" if sam2_model._mps_available() else "cpu")
    )
    assert sam2_model.resolve_device("auto") == expected
    assert sam2_model.resolve_device(None) == expected
    assert sam2_model.resolve_device(" CPU ") == "cpu"
    assert sam2_model.available_devices()[0] == "auto"
    assert "cpu" in sam2_model.available_devices()


def test_resolve_device_rejects_unavailable_and_unknown():
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            sam2_model.resolve_device("cuda")
    if not sam2_model._mps_available():
        with pytest.raises(UserError, match="mps"):
            sam2_model.resolve_device("mps")
    with pytest.raises(UserError, match="Unknown device 'tpu'"):
        sam2_model.resolve_device("tpu")


def test_compiled_extension_detection_matches_import():
    try:
        from sam2 import _C  # noqa: F401

        present = True
    except ImportError:
        present = False
    assert sam2_model.has_compiled_extension() is present


def test_get_model_is_built_like_upstream_video_predictor(sam2_checkpoint):
    import torch
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    handle = sam2_model.get_model(
        "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )
    model = handle.model
    assert isinstance(model, SAM2VideoPredictor)
    assert not model.training
    assert handle.device == torch.device("cpu")
    assert handle.image_size == TEST_IMAGE_SIZE == model.image_size
    assert handle.variant.name == "sam2.1_hiera_tiny"
    assert handle.checkpoint == sam2_checkpoint

    upstream = build_sam2_video_predictor(
        TEST_CONFIG,
        ckpt_path=str(sam2_checkpoint),
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={TEST_IMAGE_SIZE}"],
    )
    for flag in (
        "binarize_mask_from_pts_for_mem_enc",
        "non_overlap_masks_for_mem_enc",
        "use_mask_input_as_output_without_sam",
        "max_cond_frames_in_attn",
        "num_maskmem",
        "image_size",
    ):
        assert getattr(model, flag) == getattr(upstream, flag), flag
    assert model.sam_mask_decoder.dynamic_multimask_via_stability
    assert model.sam_mask_decoder.dynamic_multimask_stability_thresh == 0.98
    expected_fill = upstream.fill_hole_area if sam2_model.has_compiled_extension() else 0
    assert model.fill_hole_area == expected_fill
    ours, theirs = model.state_dict(), upstream.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_get_model_is_cached_per_key_and_thread_safe(sam2_checkpoint):
    results = []

    def load():
        results.append(
            sam2_model.get_model(
                "facebook/sam2.1-hiera-tiny",
                device="cpu",
                checkpoint=str(sam2_checkpoint),
                image_size=TEST_IMAGE_SIZE,
            )
        )

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r is results[0] for r in results)
    assert sam2_model.loaded_models() == [results[0]]
    # The same model by another of its names is the same cached object.
    again = sam2_model.get_model(
        "sam2.1_hiera_tiny.pt", device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )
    assert again is results[0]
    sam2_model.clear_cache()
    fresh = sam2_model.get_model(
        "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )
    assert fresh is not results[0]


def test_get_model_uses_models_folder_copy(sam2_checkpoint, isolated_data_dir):
    import shutil

    from sst_desktop import paths

    target = paths.models_dir() / "sam2.1_hiera_tiny.pt"
    shutil.copyfile(sam2_checkpoint, target)
    handle = sam2_model.get_model("sam2.1_hiera_tiny", device="cpu", image_size=TEST_IMAGE_SIZE)
    assert handle.checkpoint == target


def test_autocast_is_a_no_op_on_cpu(sam2_checkpoint):
    import torch

    handle = sam2_model.get_model(
        "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )
    assert isinstance(handle.autocast(), contextlib.nullcontext)
    with sam2_model.inference(handle):
        assert torch.is_inference_mode_enabled()
        assert not torch.is_autocast_enabled("cpu")
    # The lock is re-entrant: candidate code may take it inside a propagation callback.
    with handle.lock, handle.lock:
        pass


def test_missing_explicit_checkpoint_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        sam2_model.get_model("sam2.1_hiera_tiny", device="cpu", checkpoint=missing)


@pytest.mark.parametrize("size", [0, 100, "big"])
def test_bad_image_size(size, sam2_checkpoint):
    with pytest.raises(UserError, match="image_size"):
        sam2_model.get_model(
            "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=size
        )


def test_loading_a_model_does_not_block_status_or_other_models(monkeypatch, sam2_checkpoint):
    """While one model loads (seconds to minutes), the GUI's loaded_models() and a cached model
    must stay available, and a second caller for the same model waits for that one load."""
    entered, release = threading.Event(), threading.Event()
    calls = []
    real_load = sam2_model._load

    def slow_load(**kwargs):
        calls.append(kwargs["image_size"])
        if kwargs["image_size"] == 320:
            entered.set()
            release.wait(timeout=60)
        return real_load(**kwargs)

    monkeypatch.setattr(sam2_model, "_load", slow_load)
    ready = sam2_model.get_model(
        "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=TEST_IMAGE_SIZE
    )
    got = []

    def load_320():
        got.append(
            sam2_model.get_model(
                "sam2.1_hiera_tiny", device="cpu", checkpoint=sam2_checkpoint, image_size=320
            )
        )

    loaders = [threading.Thread(target=load_320, daemon=True) for _ in range(2)]
    loaders[0].start()
    assert entered.wait(timeout=60)
    loaders[1].start()
    seen = {}
    probe = threading.Thread(
        target=lambda: seen.update(
            loaded=sam2_model.loaded_models(),
            cached=sam2_model.get_model(
                "sam2.1_hiera_tiny",
                device="cpu",
                checkpoint=sam2_checkpoint,
                image_size=TEST_IMAGE_SIZE,
            ),
        ),
        daemon=True,
    )
    probe.start()
    probe.join(timeout=30)
    blocked = probe.is_alive()
    release.set()
    for t in loaders:
        t.join(timeout=60)
    assert not blocked, "loaded_models()/a cached model waited for another model's load"
    assert seen == {"loaded": [ready], "cached": ready}
    assert len(got) == 2 and got[0] is got[1]
    assert calls.count(320) == 1


def test_out_of_memory_while_loading_is_not_called_a_wrong_checkpoint(monkeypatch, sam2_checkpoint):
    import sam2.build_sam
    import torch

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(sam2.build_sam, "build_sam2_video_predictor", oom)
    with pytest.raises(UserError, match="memory") as info:
        sam2_model.get_model(
            "sam2.1_hiera_tiny",
            device="cpu",
            checkpoint=sam2_checkpoint,
            image_size=TEST_IMAGE_SIZE,
        )
    assert not isinstance(info.value, CheckpointError)
    assert "sam2.1_hiera_tiny" in str(info.value) and "cpu" in str(info.value)


def test_cuda_and_cuda_0_share_one_cached_model(monkeypatch, sam2_checkpoint):
    """ "cuda" means the current CUDA device: it must not load a second copy next to "cuda:0"."""
    import torch

    # Pretend to have two GPUs with the second current; the real normalisation decides the key.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert sam2_model.canonical_device("cuda") == "cuda:1"
    assert sam2_model.canonical_device(" CUDA:1 ") == "cuda:1"
    assert sam2_model.canonical_device("cuda:0") == "cuda:0"
    assert sam2_model.canonical_device("cpu") == "cpu"

    loads = []

    def fake_load(variant, device_name, path, image_size):  # no GPU here to build on
        loads.append(device_name)
        return sam2_model.Sam2Handle(
            variant=variant,
            device=torch.device("cpu"),
            image_size=image_size,
            model=object(),
            checkpoint=path,
        )

    monkeypatch.setattr(sam2_model, "_load", fake_load)
    kwargs = {"checkpoint": sam2_checkpoint, "image_size": TEST_IMAGE_SIZE}
    first = sam2_model.get_model("sam2.1_hiera_tiny", device="cuda", **kwargs)
    assert sam2_model.get_model("sam2.1_hiera_tiny", device="cuda:1", **kwargs) is first
    other = sam2_model.get_model("sam2.1_hiera_tiny", device="cuda:0", **kwargs)
    assert other is not first
    assert loads == ["cuda:1", "cuda:0"]


def test_a_variant_name_is_looked_up_once_along_a_model_load(sam2_checkpoint, monkeypatch):
    """get_model resolves the name where it enters; the checkpoint lookup, verification and the
    build below it receive the Variant object and never look a name up again."""
    import torch

    from sst_desktop.engine import models

    lookups: list[str] = []

    class CountingAliases(dict):
        def get(self, key, default=None):
            lookups.append(key)
            return super().get(key, default)

    def fake_load(variant, device_name, path, image_size):
        assert isinstance(variant, models.Variant)
        return sam2_model.Sam2Handle(
            variant=variant,
            device=torch.device("cpu"),
            image_size=image_size,
            model=object(),
            checkpoint=path,
        )

    monkeypatch.setattr(models, "_ALIASES", CountingAliases(models._ALIASES))
    monkeypatch.setattr(sam2_model, "_load", fake_load)
    handle = sam2_model.get_model(
        "facebook/sam2.1-hiera-tiny",
        device="cpu",
        checkpoint=sam2_checkpoint,
        image_size=TEST_IMAGE_SIZE,
    )
    assert handle.variant.name == "sam2.1_hiera_tiny"
    assert lookups == ["facebook/sam2.1-hiera-tiny"]
