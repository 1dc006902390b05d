// Helpers the CUDA kernels and their host emulators (tests run a kernel's per-thread function on
// the CPU) both call. Only for .cu files.
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace bam::cuda_kernels {

template <typename T>
BAM_HD T clamp_to(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Index of the task that holds batch-wide item `i`: the last t with first[t] <= i. `first` is a
// member pointer so one search serves every task table (first_block, first_pixel).
template <typename Task, typename Field>
BAM_HD int find_task(const Task* tasks, int num_tasks, Field Task::*first, int64_t i) {
  int lo = 0, hi = num_tasks - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (tasks[mid].*first <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace bam::cuda_kernels
