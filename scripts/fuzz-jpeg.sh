#!/usr/bin/env bash
# Fuzzes the JPEG decoder with libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/fuzz-jpeg.sh [SECONDS] [WORKDIR]
#
# Builds tools/fuzz_jpeg.cpp and the decoder's files in data/ with clang, seeds a corpus with small cjpeg files of
# different sampling factors, restart intervals, tables and scan layouts, runs for SECONDS (default
# 300), then prints the executions and any findings (crash/leak/timeout/oom files). Exits 1 when
# there are findings. Needs clang (with libFuzzer: libclang-rt-dev) and cjpeg (libjpeg-turbo-progs).
set -euo pipefail

budget=${1:-300}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-/tmp/bam-fuzz-jpeg}
lock=${BAM_BUILD_LOCK:-/tmp/bam-build.lock}

cxx=""
for candidate in clang++ clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
  if command -v "$candidate" >/dev/null; then cxx=$candidate; break; fi
done
[[ -n $cxx ]] || { echo "fuzz-jpeg: clang++ not found (apt-get install clang libclang-rt-dev)"; exit 2; }
command -v cjpeg >/dev/null || { echo "fuzz-jpeg: cjpeg not found (apt-get install libjpeg-turbo-progs)"; exit 2; }

mkdir -p "$work/obj" "$work/corpus" "$work/artifacts" "$work/seeds"
# fmt comes from the default include path unless BAM_FMT_INCLUDE names a folder; stb from
# /usr/include/stb (Debian) unless BAM_STB_INCLUDE says otherwise.
common=(-std=c++20 -g -O1 -I"$root" -isystem "${BAM_STB_INCLUDE:-/usr/include/stb}" -DFMT_HEADER_ONLY=1)
[[ -n ${BAM_FMT_INCLUDE:-} ]] && common+=(-isystem "$BAM_FMT_INCLUDE")
sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

echo "fuzz-jpeg: building with $cxx in $work/obj"
objects=()
# Only the decoder's files: the rest of data/ (datasets, loader) needs the engine.
for source in "$root"/data/jpeg_*.cpp "$root"/data/image_decode.cpp "$root"/data/stb_image_impl.cpp \
              "$root"/tools/fuzz_jpeg.cpp; do
  object="$work/obj/$(basename "${source%.cpp}").o"
  coverage=(-fsanitize=fuzzer-no-link)
  # stb_image is linked for the front door but never called (the fallback is off): no coverage.
  [[ $(basename "$source") == stb_image_impl.cpp ]] && coverage=()
  if [[ ! -f $object || $source -nt $object || -n $(find "$root/data" -name '*.h' -newer "$object") ]]; then
    flock "$lock" "$cxx" "${common[@]}" "${sanitize[@]}" "${coverage[@]}" -c "$source" -o "$object"
  fi
  objects+=("$object")
done
flock "$lock" "$cxx" "${sanitize[@]}" -fsanitize=fuzzer "${objects[@]}" -o "$work/fuzz_jpeg"

# Seeds: two small synthetic pictures (smooth gradients, a bar, some texture) in many encodings.
make_ppm() {  # width height file
  LC_ALL=C awk -v w="$1" -v h="$2" 'BEGIN {
    printf "P6\n%d %d\n255\n", w, h
    for (y = 0; y < h; y++) for (x = 0; x < w; x++) {
      r = int(128 + 100 * sin(x * 0.2) * cos(y * 0.15)); g = int(4 * x + 3 * y) % 256
      b = ((x + 2 * y) % 7 < 3) ? 220 : 30
      if (x > w / 3 && x < w / 2) { r = 255 - r; g = 40 }
      printf "%c%c%c", (r < 0 ? 0 : r), g, b
    } }' > "$3"
}
make_ppm 37 29 "$work/seeds/a.ppm"
make_ppm 7 5 "$work/seeds/b.ppm"
printf '0;\n1;\n2;\n' > "$work/seeds/separate.scans"
n=0
for picture in a b; do
  for args in "-sample 1x1" "-sample 2x1" "-sample 2x2" "-sample 1x2" "-sample 4x1" "-sample 2x2,2x1,1x1" \
              "-sample 2x2 -restart 1B" "-sample 2x1 -restart 1" "-grayscale" "-grayscale -restart 2B" \
              "-optimize -quality 95" "-quality 30 -sample 2x2" "-rgb" \
              "-sample 2x2 -scans $work/seeds/separate.scans" "-progressive" "-arithmetic"; do
    cjpeg $args -outfile "$work/corpus/seed_${picture}_$n.jpg" "$work/seeds/$picture.ppm" 2>/dev/null || true
    n=$((n + 1))
  done
done
echo "fuzz-jpeg: $(ls "$work/corpus" | wc -l) files in the corpus; fuzzing for ${budget}s"

set +e
"$work/fuzz_jpeg" -max_total_time="$budget" -max_len=131072 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" 2>&1 | tee "$work/fuzz.log" |
  grep -E '^#[0-9]+.*(pulse|DONE)|ERROR|SUMMARY|stat::'
set -e

executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$' || echo "?")
findings=$(find "$work/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) | sort)
echo "fuzz-jpeg: $executions executions in ${budget}s, corpus now $(ls "$work/corpus" | wc -l) files"
if [[ -n $findings ]]; then
  echo "fuzz-jpeg: FINDINGS ($(echo "$findings" | wc -l)):"
  echo "$findings"
  echo "reproduce with: $work/fuzz_jpeg <file>"
  exit 1
fi
echo "fuzz-jpeg: no findings"
