#!/usr/bin/env bash
# Installs the Debian packages bam builds and tests with (skips what is already there).
# The CUDA toolkit is optional: when /usr/local/cuda/bin/nvcc exists the CUDA backend is built too.
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config zlib1g-dev libfmt-dev doctest-dev libstb-dev nlohmann-json3-dev
          libcli11-dev libjpeg-turbo-progs dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "bam: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "bam: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
