#!/usr/bin/env bash
# What ptxas made of each CUDA kernel: registers per thread, bytes spilled to local memory, static
# shared memory, and the largest block the registers allow (64 K registers per SM, allocated per
# warp in units of 256). It needs no GPU: it compiles kernels/cuda/*.cu again with the build
# directory's own nvcc command lines plus --resource-usage, into a scratch folder.
#   tools/kernel-resources.sh                    # every kernel, from build/
#   tools/kernel-resources.sh build 'mma|layer_norm'   # a build directory, and a regex on the names
# A spill costs local-memory traffic in the kernel's inner loop; a block wider than the register
# limit fails to launch on a GPU ("too many resources requested"), which the CUDA emulator does
# not model. Prints the table, spilling kernels first.
set -euo pipefail
build=${1:-build}
filter=${2:-.}
cd "$(dirname "$0")/.."
[ -f "$build/build.ninja" ] || { echo "kernel-resources: $build/build.ninja not found (configure with -G Ninja)" >&2; exit 2; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The nvcc lines of the kernel library, minus the dependency file, writing into the scratch folder.
(cd "$build" && ninja -t commands bam_kernels_cuda | grep -E '(^|/)nvcc ' |
  sed -E 's# -MD -MT [^ ]+ -MF [^ ]+##; s# -o [^ ]+$##') >"$scratch/commands"
[ -s "$scratch/commands" ] || { echo "kernel-resources: no nvcc commands in $build (a build without CUDA?)" >&2; exit 2; }
n=0
while read -r command; do
  n=$((n + 1))
  echo "(cd '$build' && $command -o '$scratch/$n.o' --resource-usage) >'$scratch/$n.log' 2>&1" >"$scratch/$n.sh"
done <"$scratch/commands"
echo "kernel-resources: compiling $n CUDA files with --resource-usage..." >&2
ls "$scratch"/*.sh | xargs -P "$(nproc)" -n 1 bash || { cat "$scratch"/*.log >&2; exit 2; }
cat "$scratch"/*.log >"$scratch/all"
python3 - "$scratch/all" "$filter" <<'EOF'
import math, re, subprocess, sys
text, pattern = open(sys.argv[1]).read().splitlines(), re.compile(sys.argv[2])
kernels, current = [], None
for line in text:
    m = re.search(r"Compiling entry function '(\S+)'", line)
    if m:
        current = {"name": m.group(1), "regs": 0, "spill": 0, "smem": 0}
        kernels.append(current)
    elif current is not None:
        if m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line):
            current["spill"] = int(m.group(1)) + int(m.group(2))
        if m := re.search(r"Used (\d+) registers", line):
            current["regs"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes smem", line):
            current["smem"] = int(m.group(1))
names = subprocess.run(["c++filt"], input="\n".join(k["name"] for k in kernels), capture_output=True,
                       text=True).stdout.splitlines()
rows = []
for k, name in zip(kernels, names):
    name = re.sub(r"bam::cuda_kernels::(\(anonymous namespace\)::)?", "", name)
    name = re.sub(r"\(.*", "", name)  # the template arguments say enough; drop the parameter list
    if not pattern.search(name):
        continue
    per_warp = max(1, math.ceil(k["regs"] * 32 / 256)) * 256
    widest = min(1024, 65536 // per_warp * 32)
    rows.append((k["spill"], k["regs"], k["smem"], widest, name))
rows.sort(key=lambda r: (-r[0], -r[1], r[4]))
print(f"{'spill B':>8} {'regs':>5} {'smem B':>7} {'widest block':>12}  kernel")
for spill, regs, smem, widest, name in rows:
    print(f"{spill:>8} {regs:>5} {smem:>7} {widest:>12}  {name}")
spilling = sum(1 for r in rows if r[0] > 0)
print(f"{len(rows)} kernels, {spilling} spilling")
EOF
