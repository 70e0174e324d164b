#!/usr/bin/env bash
# Set up SST Desktop in ./.venv from a fresh checkout.
#   bash packaging/install.sh          the app, and the window's system libraries (as root or with
#                                      sudo that asks no password; otherwise it prints the apt command)
#   bash packaging/install.sh --dev    the app, test tools and the system packages the tests need
# torch must be installed before sam2, and sam2 without build isolation, or pip builds sam2
# against a second multi-GB torch; SAM2_BUILD_CUDA=0 skips its optional CUDA extension.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1
python="${PYTHON:-python3}"
torch_spec="${SST_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

# shellcheck source=packaging/system_packages.sh
source packaging/system_packages.sh

install_system_packages "the app window" "${window_packages[@]}"
if [[ $dev == 1 ]]; then
    install_system_packages "the GUI and browser tests" "${dev_packages[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "== creating .venv"
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
echo "== torch"
# shellcheck disable=SC2086
"${pip[@]}" install $torch_spec
echo "== sam2"
"${pip[@]}" install setuptools wheel
SAM2_BUILD_CUDA=0 "${pip[@]}" install --no-build-isolation "sam2==1.1.0"
echo "== sst-desktop"
# With its dependencies from pyproject.toml; --dev adds the test tools and the cluster extra.
if [[ $dev == 1 ]]; then
    "${pip[@]}" install -e ".[dev,cluster]"
else
    "${pip[@]}" install -e .
fi
echo "== ready: .venv/bin/sst-desktop"
