// Errors that kernels find in their input (an out-of-range index), reported without a wait of
// their own: a ring of small slots in page-locked host memory that the device writes through.
// Each launch that can find such an error takes the next slot; the host looks at the slots of the
// completed launches after every wait it does anyway (cuda::synchronize, a copy to the host) and
// throws the first error there. Only built with the CUDA backend.
#include "engine/cuda_error_slots.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <mutex>

#include "engine/cuda.h"
#include "engine/cuda_check.h"

namespace bam::cuda {
namespace {

// 1,024 launches between two waits (a training step has a handful); past that, a launch waits.
constexpr int64_t kSlots = 1024;

// Launch number n uses slot n % kSlots; the launches from `oldest` to `next` are pending.
struct ErrorSlots {
  std::mutex mutex;
  int64_t* host = nullptr;    // kSlots x {flag, value}, page-locked and mapped
  int64_t* device = nullptr;  // the same memory, as the device addresses it
  int64_t oldest = 0, next = 0;
  std::array<std::function<std::string(int64_t)>, kSlots> describe;  // per slot: words its error
};

ErrorSlots& slots() {
  static ErrorSlots s;
  return s;
}

}  // namespace

int64_t* error_slot(std::function<std::string(int64_t value)> describe) {
  ErrorSlots& s = slots();
  std::unique_lock<std::mutex> lock(s.mutex);
  while (s.next - s.oldest >= kSlots) {
    // Every slot may still be written by a queued kernel: wait, and look at them all. (This may
    // throw an earlier launch's error from here, before this launch.)
    lock.unlock();
    synchronize();
    lock.lock();
  }
  if (!s.host) {
    void* host = nullptr;
    void* device = nullptr;
    BAM_CUDA_CHECK(cudaHostAlloc(&host, kSlots * 2 * sizeof(int64_t), cudaHostAllocMapped | cudaHostAllocPortable));
    // With unified addressing (every 64-bit process) kernels reach page-locked memory through the
    // host's own pointer; cudaHostGetDevicePointer may refuse when the context was created
    // without cudaDeviceMapHost, which unified addressing makes unnecessary.
    if (cudaHostGetDevicePointer(&device, host, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      device = host;
    }
    s.host = static_cast<int64_t*>(host);
    s.device = static_cast<int64_t*>(device);
    std::fill(s.host, s.host + kSlots * 2, int64_t{0});
  }
  const int64_t slot = s.next++ % kSlots;
  s.describe[slot] = std::move(describe);
  return s.device + slot * 2;
}

void throw_reported_errors(int64_t launches_before_wait) {
  ErrorSlots& s = slots();
  std::string first_error;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (; s.oldest < launches_before_wait; ++s.oldest) {
      const int64_t k = s.oldest % kSlots;
      volatile int64_t* slot = s.host + k * 2;
      if (slot[0] != 0 && first_error.empty()) first_error = s.describe[k](slot[1]);
      slot[0] = 0;
      slot[1] = 0;
      s.describe[k] = nullptr;
    }
  }
  if (!first_error.empty())
    fail("{} (found by the kernel; reported at the host's next wait for the device)", first_error);
}

int64_t error_slots_taken() {
  ErrorSlots& s = slots();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.next;
}

}  // namespace bam::cuda
