#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA device and nothing installed beyond nvcc, CMake, ninja,
# PyTorch and timm (the lent H200): builds for sm_90 with the vendored headers of .deps
# (scripts/vendor-deps.sh), runs the GPU suites plainly and under compute-sanitizer memcheck,
# runs bamtool bench-step beside the PyTorch peer (../shared/bench/torch_bam_step.py, copied to
# .deps/bench), and prints one table last. Logs go to $OUT (default /tmp/gpu-check).
#   tools/gpu-check.sh            # everything, within GPU_CHECK_BUDGET_S (default 520 s)
#   tools/gpu-check.sh --quick    # build and GPU tests only
set -uo pipefail
export PATH="$PATH:/usr/local/cuda/bin"
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
declare -a rows
row() { rows+=("| $1 | $2 |"); echo "== $1: $2"; }
start=$(date +%s)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
[ -d .deps/include ] || { echo "gpu-check: .deps/ is missing (run scripts/vendor-deps.sh and carry .deps)" >&2; exit 2; }

# 1. Build: one architecture, the GPU test binary and bamtool.
if cmake -S . -B build-gpu -G Ninja -DBAM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBAM_BUILD_BENCH=OFF \
     -DBAM_DEPS_DIR="$PWD/.deps" -DZLIB_INCLUDE_DIR="$PWD/.deps/include" -DZLIB_LIBRARY="$PWD/.deps/lib/libz.a" \
     >"$OUT/configure.log" 2>&1 &&
   cmake --build build-gpu -j"$(nproc)" --target bam_gpu_tests bamtool bamtrain >"$OUT/build.log" 2>&1; then
  row build "ok in $(( $(date +%s) - start )) s"
else
  row build "FAILED (see build.log)"; tail -40 "$OUT/build.log"; printf '%s\n' "${rows[@]}"; exit 1
fi

# 2. GPU suites, with synchronous launches so that a failing kernel is named where it fails.
CUDA_LAUNCH_BLOCKING=1 timeout 150 ./build-gpu/bin/bam_gpu_tests --no-intro=true >"$OUT/gpu_tests.log" 2>&1
status=$?
grep -E "rows run on CUDA|test cases|assertions" "$OUT/gpu_tests.log"
row "GPU tests" "$([ $status = 0 ] && echo passed || echo "FAILED (rc $status, see gpu_tests.log)")"
if [ $quick = 0 ]; then
  # 3. The training step, ours beside PyTorch's (ViT-S/16, B=256, 2x224 + 6x96).
  timeout 120 ./build-gpu/bin/bamtool bench-step --device cuda --precision f32 --arch vit_small --batch 256 \
    --global_crops 2 --local_crops 6 --steps 10 >"$OUT/bench_step.log" 2>&1
  ours=$(grep -E "images/s" "$OUT/bench_step.log" | awk -F'|' '{print $3}' | xargs)
  mem=$(grep -E "peak memory" "$OUT/bench_step.log" | awk -F'|' '{print $3}' | xargs)
  row "bamtool bench-step f32 img/s" "${ours:-failed (see bench_step.log)} (peak ${mem:-?})"
  if [ -f .deps/bench/torch_bam_step.py ]; then
    OUT="$OUT" PYTHONUNBUFFERED=1 timeout 150 python3 .deps/bench/torch_bam_step.py --batch 256 \
      >"$OUT/torch_step.log" 2>&1
    peer=$(tail -1 "$OUT/torch_step.log" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(f"{r[\"img_per_s\"]:.1f} img/s, peak {r[\"peak_gib\"]:.1f} GiB")' 2>/dev/null)
    row "PyTorch bf16 eager img/s" "${peer:-failed (see torch_step.log)}"
  fi

  # 4. timm loads `bamtool export` output with strict name matching (one CPU step makes a checkpoint).
  tiny=/tmp/gpu-check-tiny
  rm -rf "$tiny"
  if timeout 60 ./build-gpu/bin/bamtrain --arch vit_small --patch_size 16 --data_path synthetic:16 --batch_size_per_gpu 8 \
       --epochs 1 --warmup_epochs 0 --max_steps 1 --local_crops_number 0 --knn_freq 0 --output_dir "$tiny" >"$OUT/timm.log" 2>&1 &&
     ./build-gpu/bin/bamtool export "$tiny/checkpoint.safetensors" "$tiny/vits16.safetensors" >>"$OUT/timm.log" 2>&1 &&
     python3 -c "import timm, sys; m = timm.create_model('vit_small_patch16_224', num_classes=0); \
timm.models.load_checkpoint(m, sys.argv[1], strict=True); print('strict load ok')" "$tiny/vits16.safetensors" \
       >>"$OUT/timm.log" 2>&1; then
    row "timm strict load of bamtool export" ok
  else
    row "timm strict load of bamtool export" "FAILED (see timm.log)"
  fi

  # 5. compute-sanitizer memcheck over the GPU suites, last, in whatever time the budget leaves.
  left=$(( ${GPU_CHECK_BUDGET_S:-520} - ($(date +%s) - start) ))
  if ! command -v compute-sanitizer >/dev/null; then
    row "memcheck" "compute-sanitizer not found"
  elif [ $left -lt 30 ]; then
    row "memcheck" "not run: ${left} s left of the budget"
  else
    timeout $left compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/bin/bam_gpu_tests --no-intro=true \
      >"$OUT/memcheck.log" 2>&1
    status=$?
    grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1
    case $status in
      0) row "memcheck" "clean (whole GPU suite)";;
      124) row "memcheck" "timed out after ${left} s (see memcheck.log)";;
      *) row "memcheck" "rc $status (see memcheck.log)";;
    esac
  fi
fi

echo
echo "| check | result |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
echo "(total $(( $(date +%s) - start )) s; logs in $OUT)"
