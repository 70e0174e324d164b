"""The SAM2 variant registry: names, configs, URLs and HF ids agree with the sam2 package."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

from sst_desktop.engine.models import DEFAULT_VARIANT, VARIANTS, resolve_variant, variant_names
from sst_desktop.errors import UserError


def test_registry_has_every_family_and_size():
    pairs = {(v.family, v.size) for v in VARIANTS.values()}
    assert pairs == {
        (f, s) for f in ("2.0", "2.1") for s in ("tiny", "small", "base_plus", "large")
    }
    assert DEFAULT_VARIANT in VARIANTS
    assert variant_names()[0] == "sam2.1_hiera_tiny"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_config_exists_in_sam2_package(name):
    variant = VARIANTS[name]
    assert resources.files("sam2").joinpath(variant.config).is_file(), variant.config


def test_hf_ids_and_file_names_match_upstream_table():
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    ours = {v.hf_id: (v.config, v.checkpoint_name) for v in VARIANTS.values()}
    assert ours == HF_MODEL_ID_TO_FILENAMES


def test_official_urls():
    assert VARIANTS["sam2.1_hiera_large"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt"
    )
    assert VARIANTS["sam2_hiera_base_plus"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt"
    )
    for v in VARIANTS.values():
        assert v.url.endswith("/" + v.checkpoint_name)
        assert v.approx_mb > 100


@pytest.mark.parametrize(
    "alias",
    [
        "sam2.1_hiera_base_plus",
        "facebook/sam2.1-hiera-base-plus",
        "FACEBOOK/SAM2.1-HIERA-BASE-PLUS",
        "sam2.1_hiera_base_plus.pt",
        "/some/folder/sam2.1_hiera_base_plus.pt",
        "C:\\models\\sam2.1_hiera_base_plus.pt",
        "configs/sam2.1/sam2.1_hiera_b+.yaml",
        "sam2.1_hiera_b+",
        "  sam2.1-hiera-base-plus ",
    ],
)
def test_resolve_aliases(alias):
    assert resolve_variant(alias).name == "sam2.1_hiera_base_plus"


def test_resolve_keeps_families_apart():
    assert resolve_variant("facebook/sam2-hiera-tiny").name == "sam2_hiera_tiny"
    assert resolve_variant("facebook/sam2.1-hiera-tiny").name == "sam2.1_hiera_tiny"
    assert resolve_variant("sam2_hiera_large.pt").family == "2.0"


def test_resolve_passthrough_and_default():
    v = VARIANTS["sam2_hiera_small"]
    assert resolve_variant(v) is v
    assert resolve_variant(None).name == DEFAULT_VARIANT
    assert resolve_variant("").name == DEFAULT_VARIANT


@pytest.mark.parametrize("bad", ["sam3_hiera_tiny", "facebook/sam2.1-hiera-huge", "tiny", "x.pt"])
def test_unknown_variant_lists_valid_names(bad):
    with pytest.raises(UserError) as info:
        resolve_variant(bad)
    message = str(info.value)
    assert bad in message
    assert "sam2.1_hiera_large" in message and "sam2_hiera_tiny" in message
    assert "\n" not in message


def test_label_mentions_family_size_and_download():
    assert VARIANTS["sam2.1_hiera_base_plus"].label == "SAM 2.1 base+ (324 MB)"


def test_engine_modules_import_without_torch():
    """The GUI imports these at startup; torch and sam2 must load only when a model is used."""
    code = (
        "import sys\n"
        "import sst_desktop.engine.models, sst_desktop.engine.checkpoints, sst_desktop.engine.sam2_model\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('sst_desktop.engine.candidates'):\n"
        "    import sst_desktop.engine.candidates\n"
        "bad = [m for m in ('torch', 'sam2', 'hydra') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
