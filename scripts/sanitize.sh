#!/usr/bin/env bash
# The CPU test suites under AddressSanitizer and UndefinedBehaviorSanitizer: a separate build in
# build-sanitize/ (the CUDA backend and its emulator left out: the emulator's fibers switch stacks
# behind the sanitizers' backs), then ctest. Any out-of-bounds access, use after free, leak or
# undefined behaviour aborts the suite that hit it. With --thread, ThreadSanitizer instead, in
# build-tsan/: any data race fails its suite. Not part of CI: on 2 cores each build takes 10 to 17
# minutes and the suites 3 to 8 more. Other arguments go to ctest (e.g. -R gemm).
#
# time_budget is left out: it fits schedules to seconds of wall time, and the sanitizers' threefold
# slower steps fit fewer epochs than it asks for (3 where it wants at least 4).
# Two sanitizer options are set for what the suites do on purpose or cannot change:
#   allocator_may_return_null=1  the loaders' tests ask for buffers too large to exist, and check
#                                the error that says so (the sanitizer would abort instead);
#   alloc_dealloc_mismatch=0     GCC 12's std::stable_sort frees its buffer in a way ASan takes for
#                                a mismatch (std::get_temporary_buffer), in test_bam_loss.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers="address,undefined" dir=build-sanitize
if [ "${1:-}" = --thread ]; then
  sanitizers="thread" dir=build-tsan
  shift
fi
./scripts/install-deps.sh
flags="-fsanitize=$sanitizers -fno-omit-frame-pointer"
[ "$sanitizers" != thread ] && flags="$flags -fno-sanitize-recover=undefined"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBAM_CUDA=OFF -DBAM_WERROR=ON \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)"
cd "$dir"
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:alloc_dealloc_mismatch=0
export TSAN_OPTIONS=allocator_may_return_null=1:second_deadlock_stack=1
export UBSAN_OPTIONS=print_stacktrace=1
ctest --output-on-failure --timeout 1500 -j "$(nproc 2>/dev/null || echo 2)" -E '^time_budget$' "$@"
