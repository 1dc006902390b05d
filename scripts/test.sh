#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, and runs every test suite with ctest.
# GPU suites (label gpu) report themselves skipped on machines without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh "$@"
cd build
# In parallel, one suite per core: the long emulated GPU suites start first (their COST).
ctest --output-on-failure --timeout 1200 -j "$(nproc 2>/dev/null || echo 2)"
