#!/usr/bin/env bash
# The CPU test suites under AddressSanitizer and UndefinedBehaviorSanitizer: a separate build in
# build-sanitize/ (the CUDA backend left out), then ctest. Any out-of-bounds access, use after
# free, leak or undefined behaviour aborts the suite that hit it. With --thread, ThreadSanitizer
# instead, in build-tsan/: any data race fails its suite. With --emulator, ASan and UBSan over the
# CUDA kernels run by the CUDA emulator, in build-sanitize-emulator/, then the emulated suites
# (ctest -L emulated): the emulator announces its fiber switches to ASan and makes the bytes
# around device blocks and dynamic shared memory unaddressable, so a kernel's out-of-bounds read
# or write, or its signed overflow, stops the run at the kernel's line. With --emulator-races,
# ThreadSanitizer over the emulated suites, in build-tsan-emulator/, as a race checker for the
# kernels: the emulator tells it that only __syncthreads() and warp operations order the threads
# of a block, so two threads' unordered accesses to the same memory, one a write, fail the suite
# (block_scheduler.cpp says what it does not see). Not part of CI: on 2 cores each build takes 10
# to 17 minutes and the suites 3 to 15 more. Other arguments go to ctest (e.g. -R gemm).
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
sanitizers="address,undefined" dir=build-sanitize cuda=OFF targets=() selection=(-E '^time_budget$')
case "${1:-}" in
  --thread)
    sanitizers="thread" dir=build-tsan
    shift
    ;;
  --emulator | --emulator-races)
    dir=build-sanitize-emulator cuda=ON selection=(-L emulated)
    targets=(--target bam_gpu_tests_emulated bamtrain_emulated bamprobe_emulated bamtool_emulated bamtool)
    [ "$1" = --emulator-races ] && sanitizers="thread" dir=build-tsan-emulator
    shift
    ;;
esac
./scripts/install-deps.sh
flags="-fsanitize=$sanitizers -fno-omit-frame-pointer"
[ "$sanitizers" != thread ] && flags="$flags -fno-sanitize-recover=undefined"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBAM_CUDA=$cuda -DBAM_WERROR=ON \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" "${targets[@]}"
cd "$dir"
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:alloc_dealloc_mismatch=0
export TSAN_OPTIONS=allocator_may_return_null=1:second_deadlock_stack=1
export UBSAN_OPTIONS=print_stacktrace=1
ctest --output-on-failure --timeout 1500 -j "$(nproc 2>/dev/null || echo 2)" "${selection[@]}" "$@"
