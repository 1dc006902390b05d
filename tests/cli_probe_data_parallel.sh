#!/bin/sh
# bamprobe as several ranks (real processes over TCP): each extracts the features of its share of
# the images, the kNN neighbours are merged and rank 0 trains the linear probe on the gathered
# features with the global batch. The table must be one process's with that batch, augmented
# epochs (--linear_aug) and the BatchNorm head included; only rank 0 reports and writes probe.json.
# With the CUDA emulator, the same on (emulated) GPU tensors: the vote and the probe on the device.
#
# Ranks that read another weights file at the same path stop before extracting (bamtrain makes the
# two files).
# Usage: cli_probe_data_parallel.sh <bamprobe> <scratch folder> <data folder with train/ and val/>
#        <bamtrain> [<bamprobe on the CUDA emulator>]
set -u
bin=$1
work=$2
data=$3
bamtrain=$4
emulated=${5:-}
rm -rf "$work"
mkdir -p "$work"
args="--data_path $data --arch custom --embed_dim 32 --depth 2 --num_heads 2 --img_size 28 --patch_size 7
      --epochs 4 --n_last_blocks 2 --bn_head true --linear_aug true --num_workers 1 --device cpu"
failed=0
check() {  # check <description> <command...>: the command must succeed
  what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; failed=1; fi
}
same() { cmp -s "$1/probe.json" "$2/probe.json"; }
every() {  # every <pattern> <files...>: each file holds the pattern
  pattern=$1
  shift
  for f in "$@"; do grep -q "$pattern" "$f" || return 1; done
}

"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/one16" > "$work/one16.out" 2>&1
check "one process probes" test -s "$work/one16/probe.json"

# The kNN's features are the linear features' last block, from the same pass: a kNN-only run
# (the final block alone) votes the same.
"$bin" $args --batch_size_per_gpu 16 --mode knn --output_dir "$work/knn_only" > "$work/knn_only.out" 2>&1
knn_figures() { grep -o '"knn_top[15]": [0-9.e-]*' "$1/probe.json"; }
check "the kNN of --mode both is --mode knn's" test "$(knn_figures "$work/one16")" = "$(knn_figures "$work/knn_only")"
check "(two rows of figures)" test "$(knn_figures "$work/one16" | wc -l)" -eq 4

"$bin" $args --nproc_per_node 2 --batch_size_per_gpu 8 --output_dir "$work/two" > "$work/two.out" 2>&1
status=$?
check "two ranks of 8 probe" test $status -eq 0
check "over TCP" grep -q "Data parallel: rank 0 of 2 over TCP" "$work/two.out"
check "rank 0 trains the probe with the global batch" \
  grep -q "rank 0 trains the linear probe on the 2 ranks' features, with the global batch of 16" "$work/two.out"
check "two ranks of 8 give one process's table with a batch of 16" same "$work/one16" "$work/two"
check "one table, rank 0's" test "$(grep -c '^| features |' "$work/two.out")" -eq 1

# Three ranks started by hand, as torchrun starts them; 3 x 7 against one process of 21.
"$bin" $args --batch_size_per_gpu 21 --output_dir "$work/one21" > "$work/one21.out" 2>&1
port=$((10000 + $$ % 20000))
for rank in 1 2; do
  WORLD_SIZE=3 RANK=$rank LOCAL_RANK=$rank MASTER_PORT=$port "$bin" $args --batch_size_per_gpu 7 \
    --output_dir "$work/three" > "$work/three.rank$rank.out" 2>&1 &
done
WORLD_SIZE=3 RANK=0 LOCAL_RANK=0 MASTER_PORT=$port "$bin" $args --batch_size_per_gpu 7 \
  --output_dir "$work/three" > "$work/three.out" 2>&1
status=$?
wait
check "three ranks by hand probe" test $status -eq 0
check "three ranks of 7 give one process's table with a batch of 21" same "$work/one21" "$work/three"
check "(a batch of 21 is not one of 16: the comparison can fail)" test -n "$(cmp "$work/one21/probe.json" \
  "$work/one16/probe.json")"
check "the other ranks print nothing" test ! -s "$work/three.rank1.out" -a ! -s "$work/three.rank2.out"

# A rank started with another flag: every rank stops, naming it, before any feature is extracted.
for rank in 1 2; do
  extra=""
  [ $rank = 2 ] && extra="--seed 7"
  WORLD_SIZE=3 RANK=$rank MASTER_PORT=$((port + 1)) "$bin" $args --batch_size_per_gpu 7 $extra \
    --output_dir "$work/mismatch" > "$work/mismatch.rank$rank.out" 2>&1 &
done
WORLD_SIZE=3 RANK=0 MASTER_PORT=$((port + 1)) "$bin" $args --batch_size_per_gpu 7 \
  --output_dir "$work/mismatch" > "$work/mismatch.out" 2>&1
status=$?
wait
check "ranks started with other flags stop" test $status -ne 0
check "every rank names the rank and flag that differ" every "rank 2 was started with other flags, folders or weights than rank 0 (--seed, the weights)" \
  "$work/mismatch.out" "$work/mismatch.rank1.out" "$work/mismatch.rank2.out"
check "(before any extraction)" test -z "$(grep -l "extracting" "$work"/mismatch*.out)"

# The same flags and --pretrained_weights path, another file behind it on each machine (a relative
# path from each node's own folder): one step of seed 0 on node 0, of seed 1 on node 1.
for node in 0 1; do
  "$bamtrain" --arch custom --embed_dim 32 --depth 2 --num_heads 2 --patch_size 7 --global_crops_size 28 \
    --local_crops_number 0 --out_dim 32 --hidden_dim 32 --batch_size_per_gpu 8 --data_path synthetic:16 --epochs 1 \
    --warmup_epochs 0 --max_steps 1 --knn_freq 0 --device cpu --seed $node --output_dir "$work/train$node" > "$work/train$node.out" 2>&1
  mkdir -p "$work/node$node"
  cp "$work/train$node/checkpoint.safetensors" "$work/node$node/weights.safetensors"
done
(cd "$work/node1" && WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 4)) "$bin" $args --pretrained_weights weights.safetensors \
  --output_dir "$work/weights" > "$work/weights.rank1.out" 2>&1) &
(cd "$work/node0" && WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 4)) "$bin" $args --pretrained_weights weights.safetensors \
  --output_dir "$work/weights" > "$work/weights.out" 2>&1)
status=$?
wait
check "ranks that read other weights at the same path stop" test $status -ne 0
check "both naming the rank and the weights" every "rank 1 was started with other flags, folders or weights than rank 0 (the weights)" \
  "$work/weights.out" "$work/weights.rank1.out"
check "(before any extraction)" test -z "$(grep -l "extracting" "$work"/weights*.out)"

# Ranks with different BAM_DIST_BACKEND would choose different transports: all stop, naming it.
WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 3)) "$bin" $args --output_dir "$work/backend" \
  > "$work/backend.rank1.out" 2>&1 &
BAM_DIST_BACKEND=tcp WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 3)) "$bin" $args --output_dir "$work/backend" \
  > "$work/backend.out" 2>&1
status=$?
wait
check "ranks with different BAM_DIST_BACKEND stop" test $status -ne 0
check "both naming it" every "rank 1 was started with other BAM_DIST_BACKEND than rank 0" "$work/backend.out" \
  "$work/backend.rank1.out"

WORLD_SIZE=2 RANK=0 "$bin" $args --nproc_per_node 2 --output_dir "$work/both" > "$work/both.out" 2>&1
check "--nproc_per_node inside a launched rank is refused" \
  grep -q "start the ranks either with torchrun (or by hand) or with --nproc_per_node, not both" "$work/both.out"

# The memory check counts what the ranks add: for the kNN, each gathers the whole val set's
# features and every rank's candidates. 0.1 MiB holds one process's features, not two ranks' kNN.
BAM_AVAILABLE_MEMORY_MIB=0.1 "$bin" $args --mode knn --output_dir "$work/small_one" > "$work/small_one.out" 2>&1
check "one process's kNN fits in 0.1 MiB" test -s "$work/small_one/probe.json"
BAM_AVAILABLE_MEMORY_MIB=0.1 "$bin" $args --mode knn --nproc_per_node 2 --output_dir "$work/small_two" \
  > "$work/small_two.out" 2>&1
status=$?
check "two ranks' kNN does not, and they stop" test $status -ne 0
check "saying why" grep -q "held twice at the peak, and this machine.s 2 ranks. 142.5 KiB of kNN val features and candidates) take 172.5 KiB.*fewer ranks need less" \
  "$work/small_two.out"
check "(before any extraction)" test -z "$(grep -l "extracting" "$work"/small_two.out)"

if [ -n "$emulated" ]; then
  # The emulator has one device, "cuda:0": both ranks use it.
  args=$(echo "$args" | sed 's/--device cpu/--device cuda:0 --data_backend cpu/; s/--epochs 4/--epochs 2/')
  "$emulated" $args --batch_size_per_gpu 16 --output_dir "$work/gpu_one" > "$work/gpu_one.out" 2>&1
  "$emulated" $args --nproc_per_node 2 --batch_size_per_gpu 8 --output_dir "$work/gpu_two" > "$work/gpu_two.out" 2>&1
  status=$?
  check "two ranks on the emulated GPU probe" test $status -eq 0
  check "over TCP: the ranks share one GPU" \
    grep -q "note: the ranks talk over TCP .*: ranks 0 and 1 share one GPU (more ranks than GPUs, or one --device cuda:N)" "$work/gpu_two.out"
  check "the vote on the device" grep -q "kNN (k=20, T=0.07, on cuda:0)" "$work/gpu_two.out"
  check "and the probe" grep -q "linear probe on cuda:0" "$work/gpu_two.out"
  check "two ranks on the emulated GPU give one process's table" same "$work/gpu_one" "$work/gpu_two"
  # One rank on the GPU and one on the CPU: they agree on TCP (no rank waits in NCCL's start).
  WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 2)) "$emulated" $(echo "$args" | sed 's/--device cuda:0/--device cpu/') \
    --batch_size_per_gpu 8 --output_dir "$work/gpu_cpu" > "$work/gpu_cpu.rank1.out" 2>&1 &
  WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 2)) timeout 300 "$emulated" $args --batch_size_per_gpu 8 \
    --output_dir "$work/gpu_cpu" > "$work/gpu_cpu.out" 2>&1
  status=$?
  wait
  check "a rank on the GPU and one on the CPU probe" test $status -eq 0 -a -s "$work/gpu_cpu/probe.json"
  check "over TCP, saying why" grep -q "note: the ranks talk over TCP .*: rank 1 runs on the CPU" "$work/gpu_cpu.out"
  BAM_DIST_BACKEND=nccl "$emulated" $args --nproc_per_node 2 --batch_size_per_gpu 8 --output_dir "$work/gpu_nccl" \
    > "$work/gpu_nccl.out" 2>&1
  status=$?
  check "BAM_DIST_BACKEND=nccl with ranks sharing a GPU stops, saying why" test $status -ne 0 -a -n \
    "$(grep "BAM_DIST_BACKEND=nccl: ranks 0 and 1 share one GPU" "$work/gpu_nccl.out")"
fi

if [ $failed -ne 0 ]; then
  for f in "$work"/*.out; do echo "== $f"; tail -5 "$f"; done
fi
exit $failed
