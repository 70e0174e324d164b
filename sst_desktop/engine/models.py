"""Registry of the SAM2 model variants SST Desktop can use (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from sst_desktop.errors import UserError

# What SAM2 runs on and at which input sizes: the spec, the model loader, the CLI and the UI all
# check against these.
DEVICES = ("auto", "cuda", "mps", "cpu")
DEFAULT_IMAGE_SIZE = 1024
# SAM2's backbone downsamples by 32, so the model size must be a multiple of 32.
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX, IMAGE_SIZE_STEP = 256, 2048, 32

# Official download folders of Meta's checkpoints (sam2's checkpoints/download_ckpts.sh).
SAM2_0_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
SAM2_1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

SIZES = ("tiny", "small", "base_plus", "large")
FAMILIES = ("2.0", "2.1")

# Hydra config suffix per size ("b+" is what sam2 calls base_plus in config names).
_CONFIG_SUFFIX = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
# Approximate download sizes in MB (10^6 bytes); 2.0 and 2.1 files are within 1 MB of each other.
_APPROX_MB = {"tiny": 156, "small": 184, "base_plus": 324, "large": 898}
_SIZE_LABEL = {"tiny": "tiny", "small": "small", "base_plus": "base+", "large": "large"}


@dataclass(frozen=True)
class Variant:
    """One SAM2 checkpoint flavour: its Hydra config, file name, download URL and HF id."""

    name: str  # e.g. "sam2.1_hiera_tiny" (the checkpoint file name without ".pt")
    family: str  # "2.0" or "2.1"
    size: str  # "tiny" | "small" | "base_plus" | "large"
    config: str  # package-relative Hydra config, e.g. "configs/sam2.1/sam2.1_hiera_t.yaml"
    checkpoint_name: str  # e.g. "sam2.1_hiera_tiny.pt"
    url: str  # official download URL
    approx_mb: int  # approximate download size in MB
    hf_id: str  # e.g. "facebook/sam2.1-hiera-tiny"

    @property
    def label(self) -> str:
        """Human-readable name for menus, e.g. "SAM 2.1 tiny (156 MB)"."""
        return f"SAM {self.family} {_SIZE_LABEL[self.size]} ({self.approx_mb} MB)"


def _make(family: str, size: str) -> Variant:
    prefix = "sam2.1" if family == "2.1" else "sam2"
    folder = "sam2.1" if family == "2.1" else "sam2"
    base_url = SAM2_1_BASE_URL if family == "2.1" else SAM2_0_BASE_URL
    name = f"{prefix}_hiera_{size}"
    return Variant(
        name=name,
        family=family,
        size=size,
        config=f"configs/{folder}/{prefix}_hiera_{_CONFIG_SUFFIX[size]}.yaml",
        checkpoint_name=f"{name}.pt",
        url=f"{base_url}/{name}.pt",
        approx_mb=_APPROX_MB[size],
        hf_id=f"facebook/{prefix}-hiera-{size.replace('_', '-')}",
    )


# Ordered newest family first, small to large: the order menus show them in.
VARIANTS: dict[str, Variant] = {
    v.name: v for v in (_make(family, size) for family in ("2.1", "2.0") for size in SIZES)
}

# The SST paper and the original SST-GUI used the large model; it gives the best masks and is the
# sensible default with a GPU. On a CPU-only machine sam2.1_hiera_tiny is about 4x faster
# (see README) and is the variant to pick there.
DEFAULT_VARIANT = "sam2.1_hiera_large"


def _aliases(variant: Variant) -> set[str]:
    """All spellings that name `variant` (compared lower-case)."""
    config_stem = PurePath(variant.config).stem  # e.g. "sam2.1_hiera_t", "sam2_hiera_b+"
    return {
        variant.name,
        variant.checkpoint_name,
        variant.hf_id,
        variant.config,
        config_stem,
        f"{config_stem}.yaml",
        variant.hf_id.split("/", 1)[1],  # "sam2.1-hiera-tiny" without the "facebook/" owner
    }


_ALIASES: dict[str, Variant] = {
    alias.lower(): v for v in VARIANTS.values() for alias in _aliases(v)
}


def resolve_variant(name: str | Variant | None) -> Variant:
    """Variant named by a variant name, HF id, checkpoint file name or config; UserError if unknown."""
    if isinstance(name, Variant):
        return name
    if name is None or not str(name).strip():
        return VARIANTS[DEFAULT_VARIANT]
    key = str(name).strip()
    found = _ALIASES.get(key.lower())
    if found is None and key.lower().endswith(".pt"):
        # A checkpoint path: its file name says which variant it is.
        found = _ALIASES.get(PurePath(key.replace("\\", "/")).name.lower())
    if found is None:
        valid = ", ".join(VARIANTS)
        raise UserError(
            f"Unknown SAM2 model {key!r}: use one of {valid} "
            f"(or an HF id such as facebook/sam2.1-hiera-large)."
        )
    return found


def variant_names() -> list[str]:
    """Names of all known variants, in menu order."""
    return list(VARIANTS)
