#!/bin/sh
# bamtrain as a data-parallel run: two processes on the CPU, started the way torchrun starts them
# (WORLD_SIZE, RANK, MASTER_PORT), against one process that trains on the whole batch. Their step
# losses must agree (the same global batch, loss and averaged gradient; only the order of float
# sums differs). Then the run's resume, and the failures a user can cause: resuming with another
# process count, ranks started with different flags, a rank that never starts. Given a bamtrain
# built on the CUDA emulator too, the same comparison on "GPU" tensors (which go through host
# memory to the TCP transport: that binary has no NCCL).
# Usage: cli_data_parallel.sh <bamtrain> <scratch folder> [<bamtrain on the CUDA emulator>]
set -u
bin=$1
work=$2
emulated=${3:-}
rm -rf "$work"
mkdir -p "$work"
args="--arch custom --embed_dim 32 --depth 2 --num_heads 2 --patch_size 8 --global_crops_size 16
      --local_crops_number 2 --local_crops_size 8 --out_dim 64 --hidden_dim 64 --data_path synthetic:64
      --epochs 2 --warmup_epochs 1 --knn_freq 0 --device cpu --precision f32 --log_freq 1 --num_workers 1"
port=$((20000 + $$ % 30000))
failed=0
check() {  # check <description> <command...>: the command must succeed
  what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; failed=1; fi
}

# two ranks of 8 images: <output_dir> <port> [rank 1's batch size [rank 1's extra flags]]; returns
# rank 0's status, and rank 1's in rank1_status
two_ranks() {
  WORLD_SIZE=2 RANK=1 MASTER_PORT=$2 BAM_CONNECT_TIMEOUT_S=60 "$bin" $args --batch_size_per_gpu "${3:-8}" ${4:-} \
    --output_dir "$1" > "$1.rank1.out" 2> "$1.rank1.err" &
  rank1=$!
  WORLD_SIZE=2 RANK=0 MASTER_PORT=$2 BAM_CONNECT_TIMEOUT_S=60 "$bin" $args --batch_size_per_gpu 8 \
    --output_dir "$1" > "$1.out" 2> "$1.err"
  status=$?
  wait $rank1
  rank1_status=$?
  return $status
}

losses() { grep -o '"loss":[-0-9.e]*' "$1/steps.jsonl" | cut -d: -f2; }

"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/one" > "$work/one.out" 2>&1
check "one process with 16 images per step trains" grep -q "Training done" "$work/one.out"

two_ranks "$work/two" $port
check "two ranks with 8 images each train" grep -q "Training done" "$work/two.out"
check "rank 1 exits cleanly" test "$rank1_status" -eq 0
check "rank 0 says how the run is split" grep -q "Data parallel: rank 0 of 2 over TCP" "$work/two.out"
check "rank 1 prints nothing (rank 0 reports)" test ! -s "$work/two.rank1.out"
check "the progress line counts both ranks' images" grep -q "steps per epoch of 8 images" "$work/two.out"
losses "$work/one" > "$work/one.losses"
losses "$work/two" > "$work/two.losses"
check "8 logged steps each" test "$(wc -l < "$work/one.losses")" -eq 8 -a "$(wc -l < "$work/two.losses")" -eq 8
check "the step losses agree within 1e-5 (relative)" awk '
  NR == FNR { one[FNR] = $1; next }
  { d = $1 - one[FNR]; if (d < 0) d = -d; if (d > 1e-5 * one[FNR]) { print "step " FNR ": " one[FNR] " vs " $1; bad = 1 } }
  END { exit bad }' "$work/one.losses" "$work/two.losses"

two_ranks "$work/two" $((port + 1))
check "both ranks resume the finished run" grep -q "Resumed from .*2 epochs and 8 steps done" "$work/two.out"
check "and train nothing more" test "$(losses "$work/two" | wc -l)" -eq 8

"$bin" $args --batch_size_per_gpu 8 --output_dir "$work/two" > "$work/alone.out" 2>&1
check "one process refuses the two-process checkpoint" grep -q "trained by 2 processes (WORLD_SIZE)" "$work/alone.out"

two_ranks "$work/mismatch" $((port + 2)) 4
mismatch_status=$?
check "ranks started with different batch sizes stop" test "$mismatch_status" -ne 0 -a "$rank1_status" -ne 0
check "naming the collectives they disagree on" grep -q "took different paths" "$work/mismatch.err"
check "the other rank says which one stopped" grep -q "rank 0 closed its connection" "$work/mismatch.rank1.err"

two_ranks "$work/seeds" $((port + 3)) 8 "--seed 1"
seeds_status=$?
check "ranks whose weights differ stop before training" test "$seeds_status" -ne 0 -a "$rank1_status" -ne 0
check "saying so" grep -q "rank 1 starts at step 0 with weight sum .* rank 0 at step 0" "$work/seeds.rank1.err"
check "no step was logged" test ! -e "$work/seeds/steps.jsonl"

WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 4)) BAM_CONNECT_TIMEOUT_S=2 "$bin" $args --batch_size_per_gpu 8 \
  --output_dir "$work/lonely" > "$work/lonely.out" 2>&1
check "rank 0 alone gives up, saying who is missing" grep -q "0 of the 1 other ranks connected" "$work/lonely.out"

if [ -n "$emulated" ]; then
  # The emulator has one device, "cuda:0": both ranks use it. One epoch: emulated kernels are slow.
  args=$(echo "$args" | sed 's/--device cpu/--device cuda:0 --data_backend cpu/; s/--epochs 2/--epochs 1/')
  "$emulated" $args --batch_size_per_gpu 16 --output_dir "$work/gpu_one" > "$work/gpu_one.out" 2>&1
  bin=$emulated
  two_ranks "$work/gpu_two" $((port + 5))
  check "two ranks on the emulated GPU train" grep -q "Training done" "$work/gpu_two.out"
  check "over TCP" grep -q "Data parallel: rank 0 of 2 over TCP" "$work/gpu_two.out"
  losses "$work/gpu_one" > "$work/gpu_one.losses"
  losses "$work/gpu_two" > "$work/gpu_two.losses"
  check "4 logged steps each" test "$(wc -l < "$work/gpu_one.losses")" -eq 4 -a "$(wc -l < "$work/gpu_two.losses")" -eq 4
  check "the step losses on the emulated GPU agree within 1e-5" awk '
    NR == FNR { one[FNR] = $1; next }
    { d = $1 - one[FNR]; if (d < 0) d = -d; if (d > 1e-5 * one[FNR]) { print "step " FNR ": " one[FNR] " vs " $1; bad = 1 } }
    END { exit bad }' "$work/gpu_one.losses" "$work/gpu_two.losses"
fi

if [ $failed -ne 0 ]; then
  for f in "$work"/*.out "$work"/*.err; do echo "== $f"; tail -5 "$f"; done
fi
exit $failed
