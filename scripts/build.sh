#!/usr/bin/env bash
# Configures and builds bam into build/ (CUDA auto-detected; pass -DBAM_CUDA=OFF etc. as arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBAM_WERROR=ON "$@"
cmake --build build -j "$jobs"
