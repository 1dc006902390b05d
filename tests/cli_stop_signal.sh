#!/bin/bash
# bamtrain stopped by real signals, as a user or a job scheduler stops it. One process given
# SIGINT: it ends by that signal (not an exit status: a shell's loop stops there) once the step in
# progress is saved, says so, and the same command resumes the run to its end with one
# steps.jsonl line per step (none lost, none twice). Then two ranks under --nproc_per_node with
# SIGINT sent to the whole process group, as a terminal's Ctrl-C is: every process gets it, the
# ranks once more through the launcher; the ranks agree on the step to stop at, the launcher ends
# by the signal too without calling it a rank's failure, and the run resumes to its end. SIGHUP
# stops a run the same way, and changes nothing under nohup, ranks included. (perl,
# part of every Debian system, reports how its child ended.)
# Usage: cli_stop_signal.sh <bamtrain> <scratch folder>
set -u
set -m  # background commands in their own process group, not ignoring SIGINT (a script's are)
# and with the signals' default actions even if this script was started ignoring them
bin=(env --default-signal=INT,TERM "$1")
work=$2
rm -rf "$work"
mkdir -p "$work"
args="--arch custom --embed_dim 32 --depth 1 --num_heads 2 --patch_size 8 --global_crops_size 16
      --local_crops_number 0 --out_dim 32 --hidden_dim 32 --data_path synthetic:256 --batch_size_per_gpu 8
      --epochs 10 --warmup_epochs 1 --knn_freq 0 --device cpu --precision f32 --log_freq 1 --num_workers 1"
failed=0
check() {  # check <description> <command...>: the command must succeed
  what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; failed=1; fi
}
lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
# wait_for_steps <steps.jsonl> <n> <pid>: until the run has logged n steps (or has ended)
wait_for_steps() {
  for _ in $(seq 600); do
    [ "$(lines "$1")" -ge "$2" ] && return 0
    kill -0 "$3" 2> /dev/null || return 1
    sleep 0.05
  done
  return 1
}
# perl runs the command and then prints how it ended; it ignores SIGINT while it waits (system).
report_end='system(@ARGV); printf "ended by signal %d, status %d\n", $? & 127, $? >> 8'
last_step() { tail -n 1 "$1" | grep -o '"step":[0-9]*' | cut -d: -f2; }
# each_step_once <steps.jsonl> <n>: n lines, for n different steps
each_step_once() { [ "$(lines "$1")" -eq "$2" ] && [ "$(grep -o '"step":[0-9]*' "$1" | sort -u | wc -l)" -eq "$2" ]; }

# One process, SIGINT to its process group (perl ignores it while it waits): 32 steps an epoch, 320
# in all.
perl -e "$report_end" -- "${bin[@]}" $args --output_dir "$work/one" > "$work/one.out" 2>&1 &
pid=$!
check "the run logs its first steps" wait_for_steps "$work/one/steps.jsonl" 3 "$pid"
kill -INT -- "-$pid"
wait "$pid"
check "SIGINT ends bamtrain by SIGINT" grep -q "ended by signal 2, status 0" "$work/one.out"
check "it says where it stopped, saved" grep -q "Stopped by SIGINT .*saved" "$work/one.out"
check "and that training stopped" grep -q "^Training stopped" "$work/one.out"
check "its checkpoint is there" [ -f "$work/one/checkpoint.safetensors" ]
stopped_at=$(lines "$work/one/steps.jsonl")
check "it stopped before the end ($stopped_at of 320 steps)" [ "$stopped_at" -lt 320 ]
"${bin[@]}" $args --output_dir "$work/one" > "$work/one.resumed.out" 2>&1
status=$?
check "the same command resumes the run to its end (status $status)" \
  grep -q "Training done" "$work/one.resumed.out"
check "steps.jsonl has each of the 320 steps once ($(lines "$work/one/steps.jsonl") lines)" \
  each_step_once "$work/one/steps.jsonl" 320
check "the last one is step 320" [ "$(last_step "$work/one/steps.jsonl")" = 320 ]

# Two ranks of 8 images (16 steps an epoch, 160 in all), SIGINT to the process group.
perl -e "$report_end" -- "${bin[@]}" $args --nproc_per_node 2 --output_dir "$work/two" > "$work/two.out" 2>&1 &
pid=$!
check "two ranks log their first steps" wait_for_steps "$work/two/steps.jsonl" 3 "$pid"
kill -INT -- "-$pid"
wait "$pid"
check "Ctrl-C ends the launcher by SIGINT, after the ranks" grep -q "ended by signal 2, status 0" "$work/two.out"
check "rank 0 says where the ranks stopped, saved" grep -q "Stopped by SIGINT .*saved" "$work/two.out"
check "the launcher does not call it a rank's failure" sh -c "! grep -q 'was killed by signal\|exited with status' '$work/two.out'"
"${bin[@]}" $args --nproc_per_node 2 --output_dir "$work/two" > "$work/two.resumed.out" 2>&1
check "two ranks resume the run to its end" grep -q "Training done" "$work/two.resumed.out"
check "steps.jsonl has each of the 160 steps once ($(lines "$work/two/steps.jsonl") lines)" \
  each_step_once "$work/two/steps.jsonl" 160

# SIGHUP (a closed terminal) to one process: a stop request like the others, saved.
"${bin[@]}" $args --output_dir "$work/hup" > "$work/hup.out" 2>&1 &
pid=$!  # env execs bamtrain: the same process
check "a run for SIGHUP logs its first steps" wait_for_steps "$work/hup/steps.jsonl" 3 "$pid"
kill -HUP "$pid"
wait "$pid"
status=$?
check "SIGHUP ends bamtrain by SIGHUP (status $status)" [ "$status" -eq 129 ]
check "once it has saved" grep -q "Stopped by SIGHUP .*saved" "$work/hup.out"
# Under nohup (SIGHUP ignored from the start) the launcher and its ranks keep it ignored: SIGHUP to
# the whole process group changes nothing, and the run ends as it would have.
nohup "${bin[@]}" $(echo "$args" | sed 's/--epochs 10/--epochs 3/') --nproc_per_node 2 --output_dir "$work/nohup" \
  > "$work/nohup.out" 2>&1 &
pid=$!
check "two ranks under nohup log their first steps" wait_for_steps "$work/nohup/steps.jsonl" 3 "$pid"
kill -HUP -- "-$pid"
wait "$pid"
status=$?
check "SIGHUP does not stop ranks started under nohup (status $status)" [ "$status" -eq 0 ]
check "they train to the end" grep -q "Training done" "$work/nohup.out"
check "(all 48 steps)" each_step_once "$work/nohup/steps.jsonl" 48

if [ "$failed" -ne 0 ]; then
  for f in "$work"/*.out; do
    echo "--- $f"
    tail -n 15 "$f"
  done
fi
exit "$failed"
