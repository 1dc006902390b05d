// One process-wide thread pool for the CPU kernels: parallel_for over index ranges.
#pragma once

#include <cstdint>
#include <functional>

namespace bam::cpu {

// Number of threads kernels use: BAM_NUM_THREADS if set, else available_cores().
int num_threads();
constexpr int kMaxThreads = 1024;
// BAM_NUM_THREADS when it holds a count from 1 to kMaxThreads, else 0 (unset, or not a count: the
// tools refuse such a value at start, tools/common/environment.h).
int num_threads_requested();
// The CPUs this process may run on: its affinity mask (which taskset, a container's cpuset and
// Slurm's binding restrict), else the hardware's count.
int available_cores();
// Changes the pool size (>= 1). Not to be called while a parallel region runs.
void set_num_threads(int n);

// Splits [0, n) into contiguous chunks of at least `grain` items and calls fn(begin, end) on each,
// on the pool's threads and the caller. Runs serially when n <= grain, with one thread, or when
// called from inside another parallel region (no nested parallelism).
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Calls fn(task) for task in [0, num_tasks), each task on one thread; for kernels that partition
// work themselves (GEMM). Serial inside another parallel region.
void parallel_tasks(int num_tasks, const std::function<void(int)>& fn);

// True while the calling thread runs inside parallel_for / parallel_tasks.
bool in_parallel_region();

}  // namespace bam::cpu
