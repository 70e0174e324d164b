"""Shared fixtures: an isolated app data folder and a random-weight SAM2 checkpoint file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Small model size: a hiera-tiny frame takes about 0.15 s on CPU at 256 px.
TEST_IMAGE_SIZE = 256
TEST_VARIANT = "sam2.1_hiera_tiny"
TEST_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path_factory, monkeypatch) -> Path:
    """Point the app's data, models and cache folders at a fresh temp folder for every test."""
    path = tmp_path_factory.mktemp("appdata")
    monkeypatch.setenv("SST_DESKTOP_DATA_DIR", str(path))
    # The API opens paths only inside chosen folders; tests keep their files under pytest's temp.
    monkeypatch.setenv("SST_DESKTOP_ALLOWED_DIRS", str(tmp_path_factory.getbasetemp()))
    return path


def build_random_checkpoint(path: Path, seed: int = 0) -> Path:
    """Build hiera-tiny from sam2's own Hydra config with random weights and save it as a checkpoint."""
    import sam2  # noqa: F401  (importing sam2 initialises Hydra on its config module)
    import torch
    from hydra import compose
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    cfg = compose(config_name=TEST_CONFIG, overrides=[f"++model.image_size={TEST_IMAGE_SIZE}"])
    model = instantiate(cfg.model, _recursive_=True)
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """Path of a random-weight SAM2.1 hiera-tiny checkpoint (saved once per test session)."""
    cached = os.environ.get("SST_TEST_CHECKPOINT")
    if cached and Path(cached).is_file():
        return Path(cached)
    path = tmp_path_factory.mktemp("checkpoint") / "sam2.1_hiera_tiny.pt"
    return build_random_checkpoint(path)
