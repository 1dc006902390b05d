// Storage: one reference-counted block of memory on a device, shared by all views of a tensor.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>

#include "engine/device.h"

namespace bam {

class Storage {
 public:
  // Allocates nbytes on the device (CPU: 64-byte aligned; CUDA: through the caching allocator).
  Storage(size_t nbytes, Device device);
  // Wraps memory owned elsewhere; `release` is called with the pointer when the storage dies.
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  // Counts the in-place writes through tensors (fill_, copy_, add_, mul_, optimizer steps, EMA
  // updates), shared by every view, as torch's version counter: autograd checks that what an op's
  // backward reads has not changed since the forward (engine/autograd.h).
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> version_{0};
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  std::function<void(void*)> release_;
};

// Bytes currently held by CPU tensors, and the peak since start (for the progress line).
size_t cpu_bytes_in_use();
size_t cpu_peak_bytes();
void reset_cpu_peak_bytes();
// Freed host blocks kept for reuse (not counted as in use), and a way to hand them back.
size_t cpu_cached_bytes();
void release_cpu_cache();

}  // namespace bam
