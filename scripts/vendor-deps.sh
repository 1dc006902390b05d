#!/usr/bin/env bash
# Copies the header-only dependencies (and zlib) from this Debian machine into .deps/ (git-ignored),
# plus the PyTorch peer scripts from ../shared/bench and the Fashion-MNIST files (33 MB in all), so
# that a machine without apt or network (the lent GPU machine) can build with -DBAM_DEPS_DIR=.deps
# and run the main job. Run it here before a device call and name .deps in the call's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
rm -rf .deps
mkdir -p .deps/include .deps/stb .deps/lib .deps/bench
cp -r /usr/include/fmt /usr/include/doctest /usr/include/CLI /usr/include/nlohmann .deps/include/
cp /usr/include/stb/stb_image.h /usr/include/stb/stb_image_write.h .deps/stb/
cp /usr/include/zlib.h /usr/include/zconf.h .deps/include/
cp /usr/lib/x86_64-linux-gnu/libz.a .deps/lib/
if [ -d ../shared/bench ]; then cp ../shared/bench/*.py .deps/bench/; fi
# Fashion-MNIST (30 MB, from the Debian package) for the main job's GPU run in tools/gpu-check.sh.
mkdir -p .deps/fashion-mnist
cp /usr/share/datasets/fashion-mnist/*-idx*-ubyte.gz .deps/fashion-mnist/
echo "vendor-deps: $(du -sh .deps | cut -f1) in .deps"
