#!/usr/bin/env bash
# Build the one-folder app dist/sst-desktop/ (executable: dist/sst-desktop/sst-desktop).
#   bash packaging/build.sh               full bundle: runs on CPU, and on NVIDIA GPUs (CUDA libs inside)
#   SST_BUNDLE_CPU_ONLY=1 bash packaging/build.sh
#                                         CPU-only bundle: leaves out the CUDA libraries torch loads
#                                         only when it uses a GPU (smaller; used by the CI test)
# Needs the dev install (bash packaging/install.sh --dev). Output and work folders can be moved
# with SST_DIST_DIR and SST_BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
dist="${SST_DIST_DIR:-dist}"
work="${SST_BUILD_DIR:-build/pyinstaller}"
start=$(date +%s)
.venv/bin/pyinstaller --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "$work" packaging/sst-desktop.spec
echo "== built $dist/sst-desktop in $(( $(date +%s) - start )) s, $(du -sh "$dist/sst-desktop" | cut -f1)"
