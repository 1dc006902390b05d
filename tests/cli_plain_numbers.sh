#!/bin/sh
# Numbers on the command line mean what they say, in bamtrain, bamprobe and bamtool alike
# (tools/common/flag_checks.h): a whole number is plain decimal digits within 64 bits ("010" was
# 8 and "0x40" 64, as C reads them, and a larger value silently became the largest one), and a
# real number is finite ("inf" and "nan" were taken, and CLI11's ranges let NaN through). Each
# refusal names the flag and comes before any work; plain values still pass.
# Usage: cli_plain_numbers.sh <bamtrain> <bamprobe> <bamtool>
set -u
train=$1
probe=$2
tool=$3
failed=0
# refused <expected message> <command...>: fails, printing the message
refused() {
  expected=$1
  shift
  out=$("$@" 2>&1)
  status=$?
  if [ "$status" -ne 0 ] && printf '%s\n' "$out" | grep -qF -- "$expected"; then
    echo "ok: $* -> $expected"
  else
    echo "FAILED: $* (exit $status) did not say: $expected"
    printf '%s\n' "$out" | tail -3
    failed=1
  fi
}
data="--data_path synthetic:64 --device cpu"
refused "--epochs: expected a whole number in decimal digits without leading zeros, got '010'" \
  "$train" $data --epochs 010
refused "--batch_size_per_gpu: expected a whole number in decimal digits, got '0x40'" \
  "$train" $data --batch_size_per_gpu 0x40
refused "--epochs: is out of range, got 99999999999999999999" "$train" $data --epochs 99999999999999999999
refused "--lr: expected a finite number, got inf" "$train" $data --lr inf
refused "--temperature: expected a finite number, got nan" "$train" $data --temperature nan
refused "--epochs must be from 1 to 1000000000, got 1000000001" "$train" $data --epochs 1000000001
refused "--reg_final must be positive (or -1, its default: the same as --reg), got -0.5" "$train" $data --reg_final -0.5
refused "--embed_dim: must be 0 or more, got -384" "$train" $data --arch vit_small --embed_dim -384
refused "--eval_resize_ratio: must be a number from 1 to 4, got nan" "$probe" $data --eval_resize_ratio nan
refused "--epochs: is out of range, got 99999999999999999999" "$probe" $data --epochs 99999999999999999999
refused "--nb_knn: expected a whole number in decimal digits, got '20.5'" "$probe" $data --nb_knn 20.5
refused "--num_workers: must be a number from 1 to 1024, got 4294967296" "$probe" $data --num_workers 4294967296
refused "--num_workers must be from 0 to 1024, got 4294967296" "$train" $data --num_workers 4294967296
refused "--seconds: must be a number from 0.001 to 3600, got nan" "$tool" bench-data --seconds nan
refused "--quality: expected a whole number in decimal digits, got '0x50'" "$tool" fmnist --quality 0x50 --out /proc/x
# Plain values, signs included, still reach the checks after parsing.
refused "--data_path synthetic:64 has fewer images than one batch (256 x 1 processes)" \
  "$train" $data --epochs +2 --warmup_epochs 0 --reg_final -1 --lr 1e-3 --seed -7
exit $failed
