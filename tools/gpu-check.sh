#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA device and nothing installed beyond nvcc, CMake, ninja,
# PyTorch and timm (the lent H200). It builds for sm_90 with the vendored headers of .deps
# (scripts/vendor-deps.sh), then runs, in order:
#   - the GPU suites, each test case in its own process;
#   - the per-op microbenchmarks (bench_cuda_ops, both tensor-core attention implementations);
#   - bamtool bench-step in bf16 (with a CUPTI kernel profile, again with BAM_ATTENTION=wmma, with
#     --recompute_gelu and with --grad_checkpointing 1),
#     fp16 and f32, beside the PyTorch peer (../shared/bench/torch_bam_step.py, copied to
#     .deps/bench);
#   - a bamtrain run on the GPU whose export timm loads strictly;
#   - the GPU data path (bamtool bench-data beside tools/peers/torch_data_bench.py, bamtrain
#     --data_backend gpu on JPEGs, and its ContrastiveCrop box update);
#   - the README's main job (scripts/run.sh: Fashion-MNIST, bamtrain with its kNN monitor, bamprobe)
#     on the GPU, shortened to one minute of training and 3 probe epochs (the dataset travels in
#     .deps/fashion-mnist);
#   - data-parallel bamtrain and bamprobe ranks against one process (tests/cli_data_parallel.sh,
#     tests/cli_probe_data_parallel.sh);
#   - compute-sanitizer memcheck over the GPU suites, in whatever time is left.
# It prints one table last. Logs go to $OUT (default /tmp/gpu-check).
#   tools/gpu-check.sh            # everything, within GPU_CHECK_BUDGET_S (default 520 s)
#   tools/gpu-check.sh --quick    # build and GPU tests only
#   tools/gpu-check.sh --core     # build, GPU tests, microbenchmarks, bench-step + peer, timm
#   tools/gpu-check.sh --rest     # build, data path, main job, data parallel, memcheck
# Everything takes longer than one device call allows (600 s), so a session runs --core, then
# --rest on the still-warm machine (the build is then incremental, and --rest finds the bf16 step
# rate that --core left in build-gpu/ for its JPEG ratio).
# GPU_CHECK_<STEP>=0 leaves a step out: TESTS, OPS, STEP, PEER, TIMM, DATA, MAIN, DP, MEMCHECK.
set -uo pipefail
export PATH="$PATH:/usr/local/cuda/bin"
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
part=all
case "${1:-}" in
  "") ;;
  --quick) part=quick ;;
  --core) part=core ;;
  --rest) part=rest ;;
  *) echo "gpu-check: unknown argument '$1' (--quick, --core or --rest)" >&2; exit 2 ;;
esac
# enabled STEP: the step belongs to this part and GPU_CHECK_<STEP> is not 0.
enabled() {
  local var="GPU_CHECK_${1^^}"
  [ "${!var:-1}" != 0 ] || return 1
  case $part in
    all) return 0 ;;
    quick) [ "$1" = tests ] ;;
    core) [[ $1 =~ ^(tests|ops|step|peer|timm)$ ]] ;;
    rest) [[ $1 =~ ^(peer|data|main|dp|memcheck)$ ]] ;;
  esac
}
budget=${GPU_CHECK_BUDGET_S:-520}
declare -a rows
row() { rows+=("| $1 | $2 |"); echo "== $1: $2"; }
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
# limit SECONDS: a step's timeout, cut to what the budget has left (less 20 s for the table), so
# that one slow step cannot push the call past the device's limit and lose the table.
limit() {
  local left=$(( budget - $(elapsed) - 20 ))
  [ $left -lt 10 ] && left=10
  echo $(( $1 < left ? $1 : left ))
}
# CUPTI for bench-step --profile: the toolkit's copy, else the one in PyTorch's wheels.
cupti=$(find /usr/local/cuda/ -name 'libcupti.so*' 2>/dev/null | head -1)
[ -z "$cupti" ] && cupti=$(python3 -c 'import nvidia.cuda_cupti as m, glob, os; print((glob.glob(os.path.join(os.path.dirname(m.__file__), "lib", "libcupti.so*")) + [""])[0])' 2>/dev/null)
[ -n "$cupti" ] && export LD_LIBRARY_PATH="$(dirname "$cupti"):${LD_LIBRARY_PATH:-}"
# NCCL, which bamtrain opens at run time for multi-GPU runs: the toolkit's, else PyTorch's wheel's.
nccl=$(find /usr/local/cuda/ /usr/lib/x86_64-linux-gnu -name 'libnccl.so.2' 2>/dev/null | head -1)
[ -z "$nccl" ] && nccl=$(python3 -c 'import nvidia.nccl as m, glob, os; print((glob.glob(os.path.join(os.path.dirname(m.__file__), "lib", "libnccl.so.2")) + [""])[0])' 2>/dev/null)
[ -n "$nccl" ] && export LD_LIBRARY_PATH="$(dirname "$nccl"):${LD_LIBRARY_PATH:-}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
[ -d .deps/include ] || { echo "gpu-check: .deps/ is missing (run scripts/vendor-deps.sh and carry .deps)" >&2; exit 2; }

# 1. Build: one architecture; the GPU tests, the microbenchmarks and the tools.
if cmake -S . -B build-gpu -G Ninja -DBAM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBAM_BUILD_BENCH=OFF \
     -DBAM_DEPS_DIR="$PWD/.deps" -DZLIB_INCLUDE_DIR="$PWD/.deps/include" -DZLIB_LIBRARY="$PWD/.deps/lib/libz.a" \
     >"$OUT/build.log" 2>&1 &&
   cmake --build build-gpu -j"$(nproc)" --target bam_gpu_tests bench_cuda_ops bamtool bamtrain bamprobe >>"$OUT/build.log" 2>&1; then
  row build "ok in $(elapsed) s"
else
  row build "FAILED (see build.log)"; tail -40 "$OUT/build.log"; printf '%s\n' "${rows[@]}"; exit 1
fi

# 2. GPU suites, with synchronous launches so that a failing kernel is named where it fails. Each
#    test case runs in its own process: a kernel fault (a sticky CUDA error) then costs only its
#    own case, and the others still report.
status=0
if enabled tests; then
  mapfile -t cases < <(./build-gpu/bin/bam_gpu_tests --list-test-cases --no-intro=true 2>/dev/null |
    grep -v -E '^\[doctest\]|^=+$|^GPU suites on|^[[:space:]]*$')
  : >"$OUT/gpu_tests.log"
  failed=()
  if [ ${#cases[@]} -eq 0 ]; then
    CUDA_LAUNCH_BLOCKING=1 timeout $(limit 200) ./build-gpu/bin/bam_gpu_tests --no-intro=true >"$OUT/gpu_tests.log" 2>&1 ||
      failed+=("(whole suite, rc $?)")
  else
    for name in "${cases[@]}"; do
      echo "### $name" >>"$OUT/gpu_tests.log"
      # doctest filters are comma-separated: a comma in a name becomes the wildcard '*'.
      CUDA_LAUNCH_BLOCKING=1 timeout $(limit 120) ./build-gpu/bin/bam_gpu_tests --no-intro=true -tc="${name//,/*}" \
        >>"$OUT/gpu_tests.log" 2>&1 || failed+=("$name")
    done
  fi
  grep -E "rows run on CUDA|relative|worst relative" "$OUT/gpu_tests.log" | sed 's/^.*MESSAGE: //'
  # The NCCL case passes without checking anything when the library is missing: say which it was.
  if grep -q "NCCL not exercised" "$OUT/gpu_tests.log"; then
    row "NCCL, one rank" "not exercised: $(grep -o 'NCCL not exercised: .*' "$OUT/gpu_tests.log" | head -1 | cut -d: -f2-)"
  elif ! printf '%s\n' "${failed[@]}" | grep -q NCCL; then
    row "NCCL, one rank" "collectives on device tensors ok (${nccl:-libnccl.so.2 from the default path})"
  fi
  status=${#failed[@]}
  if [ $status = 0 ]; then
    row "GPU tests" "passed (${#cases[@]} cases, one process each)"
  else
    row "GPU tests" "FAILED ${status} of ${#cases[@]}: $(printf '%s; ' "${failed[@]}")(see gpu_tests.log)"
  fi
fi
[ $part = quick ] && { printf '%s\n' "${rows[@]}"; exit $status; }

# 3. Per-op microbenchmarks against the card's ceilings.
if enabled ops; then
  timeout $(limit 90) ./build-gpu/bin/bench_cuda_ops >"$OUT/ops.log" 2>"$OUT/ops_progress.log"
  status=$?
  cat "$OUT/ops.log"
  row "bench_cuda_ops" "$([ $status = 0 ] && echo "ok (table above)" || echo "rc $status (see ops.log)")"
fi

# 4. The training step, ViT-S/16, B=256, 2x224 + 6x96: bf16 with a kernel profile, fp16, f32 (TF32).
step() {  # step PRECISION EXTRA...
  local precision=$1; shift
  echo "### bench-step --precision $precision $* ${BAM_ATTENTION:+BAM_ATTENTION=$BAM_ATTENTION}" >>"$OUT/steps.log"
  timeout $(limit 150) ./build-gpu/bin/bamtool bench-step --device cuda --precision "$precision" --arch vit_small --batch 256 \
    --global_crops 2 --local_crops 6 "$@" >"$OUT/step.tmp" 2>&1
  cat "$OUT/step.tmp" >>"$OUT/steps.log"
  local ours mem waits
  ours=$(grep -E "^\| images/s" "$OUT/step.tmp" | awk -F'|' '{print $3}' | xargs)
  mem=$(grep -E "^\| peak memory" "$OUT/step.tmp" | awk -F'|' '{print $3}' | xargs)
  waits=$(grep -E "^\| host waits per step" "$OUT/step.tmp" | awk -F'|' '{print $3}' | xargs)
  row "bench-step $precision $*${BAM_ATTENTION:+ (BAM_ATTENTION=$BAM_ATTENTION)} img/s" \
    "${ours:-failed (see steps.log)} (peak ${mem:-?}, ${waits:-?} host waits per step)"
  last_step_ips=${ours:-}
}
# The bf16 step rate is kept in build-gpu/ (which stays on a warm machine between calls), so that
# a later --rest call can set the JPEG training rate against it.
step_rate_file=build-gpu/gpu-check-bf16-step-ips
bf16_step_ips=$(cat "$step_rate_file" 2>/dev/null || true)
step_rate_note=" (bench-step rate from an earlier call)"
if enabled step; then
  step_rate_note=""
  step bf16 --steps 10 --profile 2
  bf16_step_ips=$last_step_ips
  echo "$bf16_step_ips" >"$step_rate_file"
  sed -n '/kernel profile/,$p' "$OUT/step.tmp"
  export BAM_ATTENTION=wmma  # the earlier attention kernels, for the side-by-side
  step bf16 --steps 5
  unset BAM_ATTENTION
  step bf16 --steps 5 --recompute_gelu  # the memory lever: what it saves and what it costs
  step bf16 --steps 5 --grad_checkpointing 1  # the bigger one: every block recomputed in backward
  step fp16 --steps 5
  step f32 --steps 5 --tf32
  rm -f "$OUT/step.tmp"
  if enabled peer && [ -f .deps/bench/torch_bam_step.py ]; then
    OUT="$OUT" PYTHONUNBUFFERED=1 timeout $(limit 150) python3 .deps/bench/torch_bam_step.py --batch 256 >"$OUT/torch_step.log" 2>&1
    peer=$(tail -1 "$OUT/torch_step.log" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("%.1f img/s, peak %.1f GiB" % (r["img_per_s"], r["peak_gib"]))' 2>/dev/null)
    row "PyTorch peer bf16 eager img/s" "${peer:-failed (see torch_step.log)}"
  fi
fi

# 5. bamtrain on the GPU in bf16 (synthetic data), then timm loads its export with strict names.
if enabled timm; then
  tiny=/tmp/gpu-check-tiny
  rm -rf "$tiny"
  if timeout $(limit 90) ./build-gpu/bin/bamtrain --arch vit_small --patch_size 16 --data_path synthetic:512 --batch_size_per_gpu 64 \
       --device cuda --precision bf16 --epochs 1 --warmup_epochs 0 --max_steps 6 --local_crops_number 2 --knn_freq 0 \
       --output_dir "$tiny" >"$OUT/timm.log" 2>&1 &&
     ./build-gpu/bin/bamtool export "$tiny/checkpoint.safetensors" "$tiny/vits16.safetensors" >>"$OUT/timm.log" 2>&1 &&
     python3 -c "import timm, sys; m = timm.create_model('vit_small_patch16_224', num_classes=0); \
timm.models.load_checkpoint(m, sys.argv[1], strict=True); print('strict load ok')" "$tiny/vits16.safetensors" \
       >>"$OUT/timm.log" 2>&1; then
    row "bamtrain cuda bf16 + timm strict load of the export" ok
  else
    row "bamtrain cuda bf16 + timm strict load of the export" "FAILED (see timm.log)"; tail -5 "$OUT/timm.log"
  fi
fi

# 6. The GPU data path (issue 5): bench-data on 500x375 quality-90 JPEGs beside the torchvision
#    peer (nvJPEG decode; PIL + the DINO 8-crop recipe with 16 workers), then bamtrain reading those
#    JPEGs through the GPU loader against the synthetic-input step rate above.
if enabled data; then
  corpus=/tmp/gpu-check-jpegs
  rm -rf "$corpus"
  timeout $(limit 200) ./build-gpu/bin/bamtool bench-data --data_path "$corpus/train" --make_corpus 1024 --threads 16 \
    --batch_size 256 --seconds 6 >"$OUT/data.log" 2>&1
  status=$?
  sed -n '/^path/,$p' "$OUT/data.log"
  # Matched by the row's own label at the start of the line (a note may name another path).
  for what in "decode, CPU" "Huffman half" "decode, hybrid" "CPU loader" "GPU loader"; do
    name=$what
    case $what in
      "decode, hybrid") label="^$what" name="$what (estimate: the slower half)" ;;
      decode*) label="^$what" ;;
      Huffman*) label="^ +$what" ;;
      *) label="^decode \+ [^ ]+, $what" ;;
    esac
    # The img/s column (characters 38-49: "%-36s %12.1f"); a failed row has "failed" there, and
    # its note may hold numbers of its own.
    value=$(grep -E "$label" "$OUT/data.log" | tail -1 | cut -c38-49 | xargs)
    row "bench-data $name img/s (16 threads)" "${value:-failed rc $status (see data.log)}"
  done
  if enabled peer && [ -f tools/peers/torch_data_bench.py ]; then
    timeout $(limit 120) python3 tools/peers/torch_data_bench.py --folder "$corpus/train" --images 1024 --workers 16 \
      --batch_size 256 --seconds 8 >"$OUT/torch_data.log" 2>&1
    for mode in gpu_decode cpu_pipeline; do
      value=$(grep -E "^peer $mode +img/s" "$OUT/torch_data.log" | awk '{print $NF}')
      row "torchvision peer $mode img/s" "${value:-failed (see torch_data.log)}"
    done
  fi
  rm -rf /tmp/gpu-check-jpeg-train  # a finished run left there would resume, train nothing and log nothing
  timeout $(limit 150) ./build-gpu/bin/bamtrain --arch vit_small --data_path "$corpus/train" --batch_size_per_gpu 256 \
    --local_crops_number 6 --global_crops_scale 0.25 1 --device cuda --precision bf16 --data_backend gpu \
    --num_workers 16 --epochs 5 --warmup_epochs 0 --max_steps 20 --log_freq 1 --knn_freq 0 \
    --output_dir /tmp/gpu-check-jpeg-train >"$OUT/train_jpeg.log" 2>&1
  # The last progress line (not the "Epoch N done ... img/s" summary after it, which has no data column).
  line=$(grep -E "img/s [0-9.]+  data" "$OUT/train_jpeg.log" | tail -1)
  grep -E "GPU loader|img/s" "$OUT/train_jpeg.log" | tail -4
  # One wait per step is the design (the one read of the loss and the step's other numbers); more
  # means a sync crept into the loop.
  waits=$(tail -1 /tmp/gpu-check-jpeg-train/log.txt 2>/dev/null | python3 -c \
    'import json, sys; print(json.loads(sys.stdin.read())["train_host_waits_per_step"])' 2>/dev/null)
  row "bamtrain on JPEGs, host waits per step" "${waits:-? (see train_jpeg.log)}"
  row "bamtrain on JPEGs, --data_backend gpu" "$(echo "$line" | grep -oE "img/s [0-9.]+  data [0-9.]+s" || echo "failed (see train_jpeg.log)")"
  # The goal: within 5 % of the step on device-resident inputs (bench-step bf16 above, same model,
  # a median step). The corpus makes epochs of 4 steps, and the time from an epoch's last step to
  # the next one's first also holds the epoch's end (its log line and checkpoint), which bench-step
  # does not have: the progress line's average would charge that to so few steps. So the rate is
  # 256 over the median step time within an epoch, from steps.jsonl's time stamps, past the first
  # epoch's warm-up: 12 step times from epochs 1-4. (The loader itself runs on over the boundary:
  # each epoch's first batch is prepared while the epoch before ends.)
  jpeg_ips=$(python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [b["time_s"] - a["time_s"] for a, b in zip(rows, rows[1:])
         if a["epoch"] == b["epoch"] > 0 and b["step"] == a["step"] + 1 and b["time_s"] > a["time_s"]]
print("%.1f" % (256 / statistics.median(steps)))' /tmp/gpu-check-jpeg-train/steps.jsonl 2>/dev/null)
  row "bamtrain on JPEGs, median step within an epoch" "${jpeg_ips:-?} img/s"
  if [ -n "$jpeg_ips" ] && [ -n "${bf16_step_ips:-}" ]; then
    row "bamtrain on JPEGs / bench-step bf16" "$(awk -v a="$jpeg_ips" -v b="$bf16_step_ips" 'BEGIN {printf "%.3f", a / b}')${step_rate_note}"
  fi
  # ContrastiveCrop on the GPU: its box updates (the GPU loader's whole-image resize, the teacher's
  # f32 attention) after epochs 0 and 1, and epoch 2 cropping by those boxes. The rate is that of
  # the second update (the first one also pays for the first kernels), from log.txt.
  rm -rf /tmp/gpu-check-ccrop
  timeout $(limit 90) ./build-gpu/bin/bamtrain --arch vit_small --data_path "$corpus/train" --batch_size_per_gpu 256 \
    --local_crops_number 6 --device cuda --precision bf16 --data_backend gpu --num_workers 16 --teacher true \
    --use_ccrop true --loc_interval 1 --warmup_epochs 0 --epochs 3 --knn_freq 0 \
    --output_dir /tmp/gpu-check-ccrop >"$OUT/train_ccrop.log" 2>&1
  status=$?
  update=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
second = [r for r in rows if r.get("epoch") == 1 and r.get("ccrop_box_seconds", 0) > 0]
print("%.0f img/s, %.1f%% of the image" % (1024 / second[0]["ccrop_box_seconds"], 100 * second[0]["ccrop_box_area"]))
' /tmp/gpu-check-ccrop/log.txt 2>/dev/null)
  if [ $status = 0 ] && [ -n "$update" ] && grep -q "Epoch 2 done" "$OUT/train_ccrop.log"; then
    row "bamtrain --use_ccrop, box update (1024 JPEGs)" "$update"
  else
    row "bamtrain --use_ccrop, box update (1024 JPEGs)" "FAILED rc $status (see train_ccrop.log)"
    tail -5 "$OUT/train_ccrop.log"
  fi
fi

# 7. The README's main job on the GPU, as a user runs it (--device cuda: bf16, the GPU loader on
#    grayscale JPEGs, the kNN monitor, bamprobe's feature extraction and linear probe), shortened.
if enabled main; then
  left=$(( budget - $(elapsed) ))
  if [ ! -f .deps/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    row "main job on the GPU (scripts/run.sh)" "not run: .deps/fashion-mnist is missing (scripts/vendor-deps.sh)"
  elif [ $left -lt 120 ]; then
    row "main job on the GPU (scripts/run.sh)" "not run: ${left} s left of the budget"
  else
    main_start=$(date +%s)
    timeout $(limit 300) ./scripts/run.sh --bin build-gpu/bin --fmnist_source .deps/fashion-mnist --minutes 1 --probe_epochs 3 \
      --device cuda --fresh --out /tmp/gpu-check-main >"$OUT/main_job.log" 2>&1
    status=$?
    grep -E "^(device|data_backend|precision):|kNN evaluation|Epoch [0-9]+ done|^\| " "$OUT/main_job.log" | tail -12
    epoch=$(grep -E "Epoch [0-9]+ done" "$OUT/main_job.log" | tail -1 | grep -oE "[0-9.]+ img/s")
    backbone=$(grep -E "^\| backbone \|" "$OUT/main_job.log" | awk -F'|' '{gsub(/ /, "", $3); gsub(/ /, "", $5); printf "kNN %s, linear %s", $3, $5}')
    # A fitted schedule that ran into its deadline says so ("Time budget ... spent"): worth knowing.
    paused=$(grep -q "^Time budget of" "$OUT/main_job.log" && echo " (schedule cut short by the budget)")
    if [ $status = 0 ] && [ -n "$backbone" ]; then
      row "main job on the GPU (1 min, 3 probe epochs)" "ok in $(( $(date +%s) - main_start )) s: ${epoch:-? img/s}; backbone top-1 ${backbone}${paused}"
    else
      row "main job on the GPU (scripts/run.sh)" "FAILED rc $status (see main_job.log)"; tail -5 "$OUT/main_job.log"
    fi
  fi
fi

# 8. Data parallelism on the one GPU: two bamtrain ranks against one process with the whole batch,
#    on the CPU and on cuda:0 (over TCP, which the ranks choose themselves: they share the GPU, and
#    NCCL needs one for each), and the failures a user can cause (tests/cli_data_parallel.sh, which
#    CI runs on the CPU and the CUDA emulator).
if enabled dp; then
  timeout $(limit 120) sh tests/cli_data_parallel.sh ./build-gpu/bin/bamtrain /tmp/gpu-check-dp \
    ./build-gpu/bin/bamtrain >"$OUT/data_parallel.log" 2>&1
  status=$?
  if [ $status = 0 ]; then
    row "data parallel, 2 ranks vs 1 (CPU and cuda:0)" "ok ($(grep -c '^ok' "$OUT/data_parallel.log") checks)"
  else
    row "data parallel, 2 ranks vs 1 (CPU and cuda:0)" "FAILED rc $status: $(grep '^FAILED' "$OUT/data_parallel.log" | head -2 | tr '\n' ' ')(see data_parallel.log)"
  fi
  # bamprobe's ranks against one process, on the CPU and on cuda:0 (the kNN vote and the linear
  # probe on the GPU), on 60 + 60 Fashion-MNIST images (tests/cli_probe_data_parallel.sh).
  if [ -f .deps/fashion-mnist/train-images-idx3-ubyte.gz ] && rm -rf /tmp/gpu-check-probe-data &&
     ./build-gpu/bin/bamtool fmnist --out /tmp/gpu-check-probe-data --limit 60 --source .deps/fashion-mnist \
       >"$OUT/probe_parallel.log" 2>&1; then
    timeout $(limit 90) sh tests/cli_probe_data_parallel.sh ./build-gpu/bin/bamprobe \
      /tmp/gpu-check-dp-probe /tmp/gpu-check-probe-data ./build-gpu/bin/bamtrain ./build-gpu/bin/bamprobe \
      >>"$OUT/probe_parallel.log" 2>&1
    status=$?
    if [ $status = 0 ]; then
      row "bamprobe, ranks vs 1 (CPU and cuda:0)" "ok ($(grep -c '^ok' "$OUT/probe_parallel.log") checks)"
    else
      row "bamprobe, ranks vs 1 (CPU and cuda:0)" "FAILED rc $status: $(grep '^FAILED' "$OUT/probe_parallel.log" | head -2 | tr '\n' ' ')(see probe_parallel.log)"
    fi
  else
    row "bamprobe, ranks vs 1 (CPU and cuda:0)" "not run: no Fashion-MNIST images (.deps/fashion-mnist, see probe_parallel.log)"
  fi
fi

# 9. compute-sanitizer memcheck over the GPU suites, last, in whatever time the budget leaves.
if enabled memcheck; then
  left=$(( budget - $(elapsed) ))
  if ! command -v compute-sanitizer >/dev/null; then
    row "memcheck" "compute-sanitizer not found"
  elif [ $left -lt 30 ]; then
    row "memcheck" "not run: ${left} s left of the budget"
  else
    # First the hazards the CUDA emulator cannot show (it runs a block's threads one after another,
    # switching only at barriers): shared-memory races and barrier misuse, in the kernels that
    # share memory between threads. The attention test runs both 16-bit kernels (mma and WMMA)
    # itself. At most a third of the time left.
    for tool in racecheck synccheck; do
      share=$(( left / 6 ))
      [ $share -gt 120 ] && share=120
      timeout $share compute-sanitizer --tool $tool --error-exitcode 9 ./build-gpu/bin/bam_gpu_tests --no-intro=true \
        -tc="CUDA attention at the ViT shapes*" >"$OUT/${tool}.log" 2>&1
      status=$?
      case $status in
        0) row "$tool, attention (mma and WMMA)" "clean";;
        124) row "$tool, attention (mma and WMMA)" "timed out after ${share} s (see ${tool}.log)";;
        *) row "$tool, attention (mma and WMMA)" "rc $status (see ${tool}.log)";;
      esac
    done
    left=$(( budget - $(elapsed) ))
    # The 65,535-crop launch test is left out: under memcheck its 65 thousand crops would take much
    # of the time left, and it adds only the launch loop and the first-crop offset to what the other
    # crop tests check.
    timeout $(limit $left) compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/bin/bam_gpu_tests --no-intro=true \
      -tce="*more than 65535 crops*" >"$OUT/memcheck.log" 2>&1
    status=$?
    grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1
    case $status in
      0) row "memcheck" "clean (GPU suite but the 65,535-crop launch)";;
      124) row "memcheck" "timed out after ${left} s (see memcheck.log)";;
      *) row "memcheck" "rc $status (see memcheck.log)";;
    esac
  fi
fi

echo
echo "| check | result |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
echo "(total $(elapsed) s; logs in $OUT)"
