#!/bin/sh
# bamtrain as a data-parallel run: two processes on the CPU, started the way torchrun starts them
# (WORLD_SIZE, RANK, MASTER_PORT), against one process that trains on the whole batch. Their step
# losses must agree (the same global batch, loss and summed gradient; only the order of float
# sums differs). Then the run's resume, with the same or another split of the global batch, and
# the failures a user can cause: resuming with another global batch, ranks started with different
# flags, a rank that never starts. Given a bamtrain
# built on the CUDA emulator too, the same comparison on "GPU" tensors (which go through host
# memory to the TCP transport: that binary has no NCCL).
# With BAM_DP_IMAGES naming a JPEG folder (an ImageFolder's train, with its val beside it), the
# two ranks also train from it with ContrastiveCrop and the kNN monitor, each rank locating the
# boxes of its half of the images and extracting the features of its half of both folders; ranks
# whose copies of the images, or of the kNN folders, differ stop saying so. Ranks that resume other
# checkpoints at the same (unshared) path stop too.
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
port=$((10000 + $$ % 20000))  # below Linux's ephemeral range (32768 on)
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

every() {  # every <pattern> <files...>: each file holds the pattern
  pattern=$1
  shift
  for f in "$@"; do grep -q "$pattern" "$f" || return 1; done
}

losses() { grep -o '"loss":[-0-9.e]*' "$1/steps.jsonl" | cut -d: -f2; }

# agree <relative tolerance> <steps held to it> <later tolerance> <losses> <losses>: step by step
agree() {
  awk -v tol="$1" -v steps="$2" -v later="$3" '
    NR == FNR { one[FNR] = $1; next }
    { d = $1 - one[FNR]; if (d < 0) d = -d; t = FNR <= steps ? tol : later
      if (d > t * one[FNR]) { print "step " FNR ": " one[FNR] " vs " $1; bad = 1 } }
    END { exit bad }' "$4" "$5"
}

"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/one" > "$work/one.out" 2>&1
check "one process with 16 images per step trains" grep -q "Training done" "$work/one.out"

two_ranks "$work/two" $port
check "two ranks with 8 images each train" grep -q "Training done" "$work/two.out"
check "rank 1 exits cleanly" test "$rank1_status" -eq 0
check "rank 0 says how the run is split" grep -q "Data parallel: rank 0 of 2 over TCP" "$work/two.out"
check "rank 1 prints nothing (rank 0 reports)" test ! -s "$work/two.rank1.out"
check "each rank takes 8 images a step" grep -q "4 steps per epoch of 8 images" "$work/two.out"
losses "$work/one" > "$work/one.losses"
losses "$work/two" > "$work/two.losses"
check "8 logged steps each" test "$(wc -l < "$work/one.losses")" -eq 8 -a "$(wc -l < "$work/two.losses")" -eq 8
check "the step losses agree within 1e-5 (relative)" agree 1e-5 8 1e-5 "$work/one.losses" "$work/two.losses"

# bamtrain's own launcher starts the same two ranks: the same losses, bit for bit.
"$bin" $args --nproc_per_node 2 --batch_size_per_gpu 8 --output_dir "$work/launched" > "$work/launched.out" 2>&1
check "--nproc_per_node 2 starts two ranks" grep -q "Starting 2 ranks on this machine" "$work/launched.out"
check "which train" grep -q "Training done" "$work/launched.out"
check "as the ranks started by hand do" cmp -s "$work/two.losses" "$(losses "$work/launched" > "$work/launched.losses"; echo "$work/launched.losses")"
"$bin" $args --nproc_per_node 2 --batch_size_per_gpu 8 --lr -1 --output_dir "$work/launch_bad" > "$work/launch_bad.out" 2>&1
check "a bad flag stops the launcher before any rank starts" test "$(grep -c "lr must be positive" "$work/launch_bad.out")" -eq 1
# torchrun's other values: cpu (a rank per core this process may use: two, under taskset), auto
# (cpu with --device cpu). The launched ranks share the cores (one thread each), unless
# BAM_NUM_THREADS says otherwise.
if ! taskset -c 0,1 true 2> /dev/null; then
  echo "skipped: --nproc_per_node cpu and auto (taskset cannot pin this process to cores 0 and 1)"
else
  env -u BAM_NUM_THREADS taskset -c 0,1 "$bin" $args --nproc_per_node cpu --batch_size_per_gpu 8 \
    --output_dir "$work/per_core" > "$work/per_core.out" 2>&1
  check "--nproc_per_node cpu on two cores starts two ranks" grep -q "Starting 2 ranks on this machine" "$work/per_core.out"
  check "of one CPU thread each, which train" grep -q "global batch of 16, with 1 CPU thread$" "$work/per_core.out"
  check "(and finish)" grep -q "Training done" "$work/per_core.out"
  BAM_NUM_THREADS=2 taskset -c 0,1 "$bin" $args --nproc_per_node auto --batch_size_per_gpu 8 \
    --output_dir "$work/per_core_auto" > "$work/per_core_auto.out" 2>&1
  check "--nproc_per_node auto with --device cpu: the same, with the threads BAM_NUM_THREADS sets" \
    grep -q "global batch of 16, with 2 CPU threads$" "$work/per_core_auto.out"
fi
"$bin" $args --nproc_per_node two --output_dir "$work/nproc_bad" > "$work/nproc_bad.out" 2>&1
check "--nproc_per_node two is refused, naming the values it takes" \
  grep -q "nproc_per_node two: expected a count from 1 to 1024, or auto, cpu or gpu" "$work/nproc_bad.out"
"$bin" $args --nproc_per_node gpu --batch_size_per_gpu 8 --output_dir "$work/nproc_gpu" > "$work/nproc_gpu.out" 2>&1
gpus=$(nvidia-smi -L 2> /dev/null | grep -c "^GPU")
if [ "${gpus:-0}" -eq 0 ]; then
  check "--nproc_per_node gpu without a GPU says so" grep -q "nproc_per_node gpu: no GPU answers" "$work/nproc_gpu.out"
else
  check "--nproc_per_node gpu: a rank per GPU nvidia-smi lists ($gpus), which train" grep -q "Training done" "$work/nproc_gpu.out"
  if [ "$gpus" -gt 1 ]; then
    check "as $gpus ranks" grep -q "Starting $gpus ranks on this machine" "$work/nproc_gpu.out"
  fi
fi

two_ranks "$work/two" $((port + 1))
check "(both ranks end cleanly)" test $? -eq 0 -a "$rank1_status" -eq 0
check "both ranks resume the finished run" grep -q "Resumed from .*8 steps done (epoch 2, step 0 of 4); the schedule is complete" "$work/two.out"
check "and train nothing more" test "$(losses "$work/two" | wc -l)" -eq 8

"$bin" $args --batch_size_per_gpu 8 --output_dir "$work/two" > "$work/alone.out" 2>&1
check "one process of 8 images refuses the checkpoint of 2 x 8" \
  grep -q "global batches of 16 images (2 processes x --batch_size_per_gpu 8); resuming with 8 (1 x 8) would change the schedule; keep 16 images with --batch_size_per_gpu 16 on 1 process" "$work/alone.out"
# Another split of the same global batch continues the run: epoch 1 from the checkpoint after
# epoch 0, one process after two ranks and two ranks after one process, step for step the run
# that went on unsplit.
mkdir -p "$work/regrouped_one" "$work/regrouped_two"
cp "$work/two/checkpoint0000.safetensors" "$work/regrouped_one/checkpoint.safetensors"
cp "$work/one/checkpoint0000.safetensors" "$work/regrouped_two/checkpoint.safetensors"
"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/regrouped_one" > "$work/regrouped_one.out" 2>&1
check "one process of 16 images resumes the two ranks' run after epoch 0" \
  grep -q "Resuming a run of 2 processes x 8 images as 1 x 16" "$work/regrouped_one.out"
two_ranks "$work/regrouped_two" $((port + 9))
check "(both ranks end cleanly)" test $? -eq 0 -a "$rank1_status" -eq 0
check "and two ranks of 8 resume one process's" grep -q "Resuming a run of 1 process x 16 images as 2 x 8" "$work/regrouped_two.out"
losses "$work/regrouped_one" > "$work/regrouped_one.losses"
losses "$work/regrouped_two" > "$work/regrouped_two.losses"
tail -n 4 "$work/one.losses" > "$work/one.epoch1.losses"
tail -n 4 "$work/two.losses" > "$work/two.epoch1.losses"
check "both train epoch 1's 4 steps" \
  test "$(wc -l < "$work/regrouped_one.losses")" -eq 4 -a "$(wc -l < "$work/regrouped_two.losses")" -eq 4
check "as the unsplit runs did, within 1e-5" agree 1e-5 4 1e-5 "$work/one.epoch1.losses" "$work/regrouped_one.losses"
check "(two ranks too)" agree 1e-5 4 1e-5 "$work/two.epoch1.losses" "$work/regrouped_two.losses"
# And mid-epoch: two ranks stopped by a time budget wherever it strikes (the checkpoint is written
# at that step), then one process of 16 goes on. Its next steps are those of the same two ranks
# left to run. 256 steps an epoch, about a second on two cores alone, so the 0.3 s budget strikes
# inside the first epoch (with 64, a fast run took the whole epoch in it, and stopped between two).
args_saved=$args
args=$(echo "$args" | sed 's/--data_path synthetic:64/--data_path synthetic:4096/')
two_ranks "$work/mid_whole" $((port + 10))
check "two ranks train 512 steps uninterrupted" test $? -eq 0 -a "$rank1_status" -eq 0
WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 11)) "$bin" $args --time_budget_minutes 0.005 --batch_size_per_gpu 8 \
  --output_dir "$work/mid" > /dev/null 2> "$work/mid.rank1.err" &
rank1=$!
WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 11)) "$bin" $args --time_budget_minutes 0.005 --batch_size_per_gpu 8 \
  --output_dir "$work/mid" > "$work/mid.out" 2> "$work/mid.err"
wait $rank1
check "a time budget stops two ranks mid-run" grep -q "Time budget of 0.005 minutes spent at epoch" "$work/mid.out"
stopped=$(losses "$work/mid" | wc -l)
"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/mid" > "$work/mid_resumed.out" 2>&1
check "one process of 16 goes on from step $stopped (step $((stopped % 256)) of its epoch)" \
  grep -q "Resuming a run of 2 processes x 8 images as 1 x 16" "$work/mid_resumed.out"
losses "$work/mid_whole" | sed -n "$((stopped + 1)),$((stopped + 4))p" > "$work/mid_whole.next"
losses "$work/mid" | sed -n "$((stopped + 1)),$((stopped + 4))p" > "$work/mid.next"
check "to the end of the run" test "$(losses "$work/mid" | wc -l)" -eq "$(losses "$work/mid_whole" | wc -l)"
check "and its next 4 steps are the uninterrupted ranks' (1e-5)" \
  test "$(wc -l < "$work/mid.next")" -eq 4 -a "$(wc -l < "$work/mid_whole.next")" -eq 4
check "(the losses)" agree 1e-5 4 1e-5 "$work/mid_whole.next" "$work/mid.next"
args=$args_saved

two_ranks "$work/mismatch" $((port + 2)) 4
mismatch_status=$?
check "ranks started with different flags stop before training" test "$mismatch_status" -ne 0 -a "$rank1_status" -ne 0
check "both say which rank and flag differ" every "rank 1 was started with other flags than rank 0 (--batch_size_per_gpu)" "$work/mismatch.rank1.err" \
  "$work/mismatch.err"
check "no step was logged" test ! -e "$work/mismatch/steps.jsonl"

# two_nodes <output> <port offset> <flags...>: rank r started in $work/node<r>, as on its own machine,
# with --output_dir <output> relative to it (each node's own folder); returns rank 0's status, and
# rank 1's in rank1_status
two_nodes() {
  out=$1 offset=$2
  shift 2
  (cd "$work/node1" && WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + offset)) BAM_CONNECT_TIMEOUT_S=60 "$bin" "$@" \
    --batch_size_per_gpu 8 --output_dir "$out" > "$work/$out.rank1.out" 2> "$work/$out.rank1.err") &
  rank1=$!
  (cd "$work/node0" && WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + offset)) BAM_CONNECT_TIMEOUT_S=60 "$bin" "$@" \
    --batch_size_per_gpu 8 --output_dir "$out" > "$work/$out.out" 2> "$work/$out.err")
  status=$?
  wait $rank1
  rank1_status=$?
  return $status
}
mkdir -p "$work/node0" "$work/node1"

# The same flags and the same --output_dir naming another checkpoint on each machine (a folder that
# is not shared): rank 0's resumes the run of seed 0, rank 1's a run of seed 1 at the same step.
cp -r "$work/one" "$work/node0/resumed"
"$bin" $args --seed 1 --batch_size_per_gpu 16 --output_dir "$work/node1/resumed" > "$work/seed1.out" 2>&1
two_nodes resumed 13 $(echo "$args" | sed 's/--epochs 2/--epochs 3/')
check "ranks that resume other weights stop before training" test $? -ne 0 -a "$rank1_status" -ne 0
check "rank 1 says what it read" grep -q "rank 1 starts at step 8 with weight sum .*, rank 0 at step 8 with " \
  "$work/resumed.rank1.err"
check "and rank 0 why it stops" grep -q "another rank starts from other weights or another step than rank 0" \
  "$work/resumed.err"
check "no step was added" test "$(losses "$work/node0/resumed" | wc -l)" -eq 8

# The same flags naming other files: a relative --data_path on each machine's own copy, one image short.
if [ -n "${BAM_DP_IMAGES:-}" ]; then
  cp -r "$BAM_DP_IMAGES" "$work/node0/imgs"
  cp -r "$BAM_DP_IMAGES" "$work/node1/imgs"
  rm "$(find "$work/node1/imgs" -name '*.jpg' | sort | tail -1)"
  other=$(echo "$args" | sed 's|--data_path synthetic:64|--data_path imgs|')
  two_nodes copies 12 $other
  check "ranks that read other images stop before training" test $? -ne 0 -a "$rank1_status" -ne 0
  check "saying so" every "rank 1 was started with other images than rank 0" "$work/copies.err" "$work/copies.rank1.err"
  check "(no step logged, and the folder it made is gone)" test ! -e "$work/node0/copies"
  # The kNN monitor's folders likewise: the same training images, each node's own copy of val/ with
  # one image short on node 1.
  cp -r "$(dirname "$BAM_DP_IMAGES")/val" "$work/node0/val"
  cp -r "$(dirname "$BAM_DP_IMAGES")/val" "$work/node1/val"
  rm -rf "$work/node1/imgs"
  cp -r "$BAM_DP_IMAGES" "$work/node1/imgs"
  rm "$(find "$work/node1/val" -name '*.jpg' | sort | tail -1)"
  two_nodes knn_copies 16 $(echo "$other" | sed 's/--knn_freq 0/--knn_freq 1/') --knn_train_path imgs --knn_val_path val
  check "ranks whose kNN folders differ stop before training" test $? -ne 0 -a "$rank1_status" -ne 0
  check "saying so" every "rank 1 was started with other kNN monitor images than rank 0" "$work/knn_copies.err" \
    "$work/knn_copies.rank1.err"
fi

# A time budget: rank 0 fits the schedule and calls the stop for both (each rank's clock differs).
budget=$(echo "$args" | sed 's/--epochs 2/--epochs 1000/')
WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 8)) "$bin" $budget --time_budget_minutes 0.05 --fit_epochs_to_budget true \
  --batch_size_per_gpu 8 --output_dir "$work/budget" > "$work/budget.rank1.out" 2> "$work/budget.rank1.err" &
rank1=$!
WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 8)) "$bin" $budget --time_budget_minutes 0.05 --fit_epochs_to_budget true \
  --batch_size_per_gpu 8 --output_dir "$work/budget" > "$work/budget.out" 2> "$work/budget.err"
budget_status=$?
wait $rank1
check "two ranks fit a time budget together and both end cleanly" test "$budget_status" -eq 0 -a $? -eq 0
check "rank 0 says what it fitted" grep -q "fit the 0.05-minute budget" "$work/budget.out"
check "and the run ends in it" grep -Eq "Training (done|paused)" "$work/budget.out"

# A rank stopped (SIGSTOP, as Ctrl-Z stops it) for a few seconds: the other says, after
# BAM_STALL_NOTICE_S, whom it waits for, and the run goes on once it continues.
stalled=$(echo "$args" | sed 's/--epochs 2/--epochs 300 --max_steps 400/')
WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 14)) BAM_STALL_NOTICE_S=1 "$bin" $stalled --batch_size_per_gpu 8 \
  --output_dir "$work/stalled" > "$work/stalled.rank1.out" 2>&1 &
sleeper=$!
WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 14)) BAM_STALL_NOTICE_S=1 "$bin" $stalled --batch_size_per_gpu 8 \
  --output_dir "$work/stalled" > "$work/stalled.out" 2> "$work/stalled.err" &
waiter=$!
for i in $(seq 1 600); do [ -s "$work/stalled/steps.jsonl" ] && break; sleep 0.1; done  # training has begun
kill -STOP $sleeper
sleep 3.5
kill -CONT $sleeper
wait $waiter
waiter_status=$?
wait $sleeper
check "a rank stopped for a while and continued: both end cleanly" test "$waiter_status" -eq 0 -a $? -eq 0
check "the other said whom it waited for" \
  grep -Eq "rank 0: waiting for rank 1 for [0-9]+ s in a collective \((receiving from|sending to) it\); it is still connected" \
  "$work/stalled.err"
check "(at 1 s and 2 s, then it continued)" test "$(grep -c "waiting for rank 1" "$work/stalled.err")" -ge 2

# A rank killed mid-run: the other stops at once, naming it.
long=$(echo "$args" | sed 's/--epochs 2/--epochs 500/')
WORLD_SIZE=2 RANK=1 MASTER_PORT=$((port + 6)) "$bin" $long --batch_size_per_gpu 8 \
  --output_dir "$work/killed" > "$work/killed.rank1.out" 2>&1 &
victim=$!
WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 6)) "$bin" $long --batch_size_per_gpu 8 \
  --output_dir "$work/killed" > "$work/killed.out" 2> "$work/killed.err" &
survivor=$!
for i in $(seq 1 600); do [ -s "$work/killed/steps.jsonl" ] && break; sleep 0.1; done  # training has begun
kill -9 $victim
wait $victim 2>/dev/null  # gone: from here the survivor can finish at most the step it is in
steps_at_kill=$(grep -c . "$work/killed/steps.jsonl")
timeout 120 sh -c "while kill -0 $survivor 2>/dev/null; do sleep 0.2; done"  # a broken watch must not hang
wait $survivor
killed_status=$?
check "a rank killed mid-run stops the other" test "$killed_status" -ne 0
check "which names it" grep -q "rank 1 closed its connection" "$work/killed.err"
steps_after=$(grep -c . "$work/killed/steps.jsonl")
check "within a step or two of the kill ($steps_at_kill logged steps then, $steps_after at the end)" \
  test "$steps_after" -le $((steps_at_kill + 2))

# The same under --nproc_per_node: the launcher names the rank that was killed (it says nothing itself).
"$bin" $long --nproc_per_node 2 --batch_size_per_gpu 8 --output_dir "$work/launched_killed" \
  > "$work/launched_killed.out" 2> "$work/launched_killed.err" &
launcher=$!
for i in $(seq 1 600); do [ -s "$work/launched_killed/steps.jsonl" ] && break; sleep 0.1; done
victim=none
for status in /proc/[0-9]*/status; do  # the launcher's child with RANK=1
  dir=$(dirname "$status")
  if grep -qx "PPid:[[:space:]]*$launcher" "$status" 2>/dev/null &&
     tr '\0' '\n' < "$dir/environ" 2>/dev/null | grep -qx "RANK=1"; then
    victim=$(basename "$dir")
  fi
done
check "(rank 1 found)" test "$victim" != none
kill -9 "$victim"
timeout 120 sh -c "while kill -0 $launcher 2>/dev/null; do sleep 0.2; done"
wait $launcher
check "the launcher stops when a rank is killed" test $? -ne 0
check "naming the rank and the signal" grep -q "rank 1 (pid $victim) was killed by signal 9" "$work/launched_killed.err"

# The launcher stopped by a signal (a scheduler's, say) stops its ranks.
"$bin" $long --nproc_per_node 2 --batch_size_per_gpu 8 --output_dir "$work/launcher_stopped" \
  > "$work/launcher_stopped.out" 2>&1 &
launcher=$!
for i in $(seq 1 600); do [ -s "$work/launcher_stopped/steps.jsonl" ] && break; sleep 0.1; done
kill -TERM $launcher
wait $launcher
sleep 1
check "a launcher stopped by SIGTERM leaves no rank running" \
  test -z "$(pgrep -f -- "--output_dir $work/launcher_stopped")"
pkill -KILL -f -- "--output_dir $work/launcher_stopped" 2>/dev/null

# The gradient's scale shows with plain SGD at a large learning rate (AdamW hides it), and the
# teacher, top-k targets and a frozen last layer take their own paths through the step.
sgd="--optimizer sgd --lr 5 --warmup_epochs 0 --clip_grad 0 --teacher true --top_k_sink 8 --freeze_last_layer 1"
args_adamw=$args
args="$args_adamw $sgd"
args=$(echo "$args" | sed 's/--warmup_epochs 1 //')
"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/sgd_one" > "$work/sgd_one.out" 2>&1
two_ranks "$work/sgd_two" $((port + 3))
check "SGD on two ranks: both end cleanly" test $? -eq 0 -a "$rank1_status" -eq 0
losses "$work/sgd_one" > "$work/sgd_one.losses"
losses "$work/sgd_two" > "$work/sgd_two.losses"
check "SGD with a teacher, top-k and a frozen last layer: 8 steps each" \
  test "$(wc -l < "$work/sgd_one.losses")" -eq 8 -a "$(wc -l < "$work/sgd_two.losses")" -eq 8
# A wrong gradient scale shows from the second step on. Later steps drift apart by the order of
# the float sums, which training at this rate amplifies (about 3x a step): 1e-3 from the fourth.
check "and the step losses agree: 1e-5 for three steps, then 1e-3" agree 1e-5 3 1e-3 "$work/sgd_one.losses" \
  "$work/sgd_two.losses"
check "which move: SGD trains" awk 'NR == 1 { first = $1 } END { exit !(first - $1 > 0.01 || $1 - first > 0.01) }' "$work/sgd_one.losses"
# The teacher (its EMA and momentum schedule) resumed by one process from the two ranks' epoch 0.
mkdir -p "$work/sgd_regrouped"
cp "$work/sgd_two/checkpoint0000.safetensors" "$work/sgd_regrouped/checkpoint.safetensors"
"$bin" $args --batch_size_per_gpu 16 --output_dir "$work/sgd_regrouped" > "$work/sgd_regrouped.out" 2>&1
losses "$work/sgd_regrouped" > "$work/sgd_regrouped.losses"
tail -n 4 "$work/sgd_two.losses" > "$work/sgd_two.epoch1.losses"
check "SGD with a teacher: one process goes on from the two ranks' epoch 0 as they did (1e-5)" \
  agree 1e-5 4 1e-5 "$work/sgd_two.epoch1.losses" "$work/sgd_regrouped.losses"
check "(4 steps)" test "$(wc -l < "$work/sgd_regrouped.losses")" -eq 4
args=$args_adamw

if [ -n "${BAM_DP_IMAGES:-}" ]; then
  # JPEGs through the loader's shards, and ContrastiveCrop: boxes located after epochs 0 and 1, the
  # crops placed by them in epoch 2. The kNN monitor (on .../train and .../val) after every epoch.
  args_synthetic=$args
  args=$(echo "$args" | sed "s|--data_path synthetic:64|--data_path $BAM_DP_IMAGES|; s/--epochs 2/--epochs 3/;
                             s/--warmup_epochs 1/--warmup_epochs 0/; s/--global_crops_size 16/--global_crops_size 24/;
                             s/--patch_size 8/--patch_size 6/; s/--local_crops_size 8/--local_crops_size 12/")
  args="$(echo "$args" | sed "s/--knn_freq 0/--knn_freq 1/") --use_ccrop true --loc_interval 1 --eval_resize_ratio 1"
  "$bin" $args --batch_size_per_gpu 16 --output_dir "$work/ccrop_one" > "$work/ccrop_one.out" 2>&1
  two_ranks "$work/ccrop_two" $((port + 7))
  check "JPEGs and ContrastiveCrop: two ranks end cleanly" test $? -eq 0 -a "$rank1_status" -eq 0
  check "and both runs train" every "Training done" "$work/ccrop_one.out" "$work/ccrop_two.out"
  check "the ranks locate the boxes twice" test "$(grep -c "boxes located after epoch" "$work/ccrop_two.out")" -eq 2
  check "and the ranks crop by them: their area is one process's" \
    test "$(grep -o '"ccrop_box_area":[0-9.e-]*' "$work/ccrop_one/log.txt")" = \
         "$(grep -o '"ccrop_box_area":[0-9.e-]*' "$work/ccrop_two/log.txt")"
  check "the ranks evaluate kNN after each of the 3 epochs" \
    test "$(grep -c '"knn_top1"' "$work/ccrop_two/log.txt")" -eq 3 -a "$(grep -c '"knn_top1"' "$work/ccrop_one/log.txt")" -eq 3
  check "with one process's kNN accuracies" \
    test "$(grep -o '"knn_top[15]":[0-9.e-]*' "$work/ccrop_one/log.txt")" = \
         "$(grep -o '"knn_top[15]":[0-9.e-]*' "$work/ccrop_two/log.txt")"
  losses "$work/ccrop_one" > "$work/ccrop_one.losses"
  losses "$work/ccrop_two" > "$work/ccrop_two.losses"
  check "the step losses agree within 1e-5, epoch 2 (cropped by the boxes) included" \
    agree 1e-5 100 1e-5 "$work/ccrop_one.losses" "$work/ccrop_two.losses"
  check "over all three epochs" test "$(wc -l < "$work/ccrop_two.losses")" -eq "$(wc -l < "$work/ccrop_one.losses")"
  # Fitted to a time budget: rank 0 fits, the ranks scale ContrastiveCrop's schedule (the official
  # 20 and 10 of 100 epochs) to the fitted epochs alike, and again at the first refit (a collective
  # they take together), and locate the boxes together at most the full run's four times.
  fitted=$(echo "$args" | sed "s/--epochs 3/--epochs 100/; s/--warmup_epochs 0/--warmup_epochs 10/;
                               s/--loc_interval 1/--loc_interval 20/; s/--knn_freq 1/--knn_freq 0/")
  args="$fitted --time_budget_minutes 0.1 --fit_epochs_to_budget true"
  two_ranks "$work/ccrop_fit" $((port + 15))
  fit_status=$?
  check "ContrastiveCrop fitted to a budget on two ranks: both end cleanly" test "$fit_status" -eq 0 -a "$rank1_status" -eq 0
  check "rank 0 scales the schedule to the fitted epochs" \
    grep -q "ContrastiveCrop's schedule scaled from --epochs 100 to the fitted" "$work/ccrop_fit.out"
  located=$(grep -c "boxes located after epoch" "$work/ccrop_fit.out")
  check "and the ranks locate the boxes 1 to 4 times ($located)" test "$located" -ge 1 -a "$located" -le 4
  args=$args_synthetic
fi

WORLD_SIZE=2 RANK=0 MASTER_PORT=$((port + 4)) BAM_CONNECT_TIMEOUT_S=2 "$bin" $args --batch_size_per_gpu 8 \
  --output_dir "$work/lonely" > "$work/lonely.out" 2>&1
check "rank 0 alone gives up, saying who is missing" grep -q "0 of the 1 other ranks connected" "$work/lonely.out"

if [ -n "$emulated" ]; then
  # The emulator has one device, "cuda:0": both ranks use it. One epoch: emulated kernels are slow.
  # With the JPEG folders, the kNN monitor after it, voting on the device.
  args=$(echo "$args" | sed 's/--device cpu/--device cuda:0 --data_backend cpu/; s/--epochs 2/--epochs 1/')
  if [ -n "${BAM_DP_IMAGES:-}" ]; then
    args="$(echo "$args" | sed "s/--knn_freq 0/--knn_freq 1/") --knn_train_path $BAM_DP_IMAGES
          --knn_val_path $(dirname "$BAM_DP_IMAGES")/val"
  fi
  "$emulated" $args --batch_size_per_gpu 16 --output_dir "$work/gpu_one" > "$work/gpu_one.out" 2>&1
  bin=$emulated
  two_ranks "$work/gpu_two" $((port + 5))
  check "(both emulated ranks end cleanly)" test $? -eq 0 -a "$rank1_status" -eq 0
  check "two ranks on the emulated GPU train" grep -q "Training done" "$work/gpu_two.out"
  check "over TCP" grep -q "Data parallel: rank 0 of 2 over TCP" "$work/gpu_two.out"
  check "saying why: the ranks share one GPU" \
    grep -q "note: the ranks talk over TCP .*: ranks 0 and 1 share one GPU (more ranks than GPUs, or one --device cuda:N)" "$work/gpu_two.out"
  losses "$work/gpu_one" > "$work/gpu_one.losses"
  losses "$work/gpu_two" > "$work/gpu_two.losses"
  check "4 logged steps each" test "$(wc -l < "$work/gpu_one.losses")" -eq 4 -a "$(wc -l < "$work/gpu_two.losses")" -eq 4
  check "the step losses on the emulated GPU agree within 1e-5" agree 1e-5 4 1e-5 "$work/gpu_one.losses" \
    "$work/gpu_two.losses"
  if [ -n "${BAM_DP_IMAGES:-}" ]; then
    check "the ranks' kNN vote on the emulated GPU gives one process's accuracies" \
      test "$(grep -o '"knn_top[15]":[0-9.e-]*' "$work/gpu_one/log.txt")" = \
           "$(grep -o '"knn_top[15]":[0-9.e-]*' "$work/gpu_two/log.txt")"
    check "(evaluated once)" test "$(grep -c '"knn_top1"' "$work/gpu_two/log.txt")" -eq 1
  fi
fi

if [ $failed -ne 0 ]; then
  for f in "$work"/*.out "$work"/*.err; do echo "== $f"; tail -5 "$f"; done
fi
exit $failed
