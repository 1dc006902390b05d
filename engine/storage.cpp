// Storage allocation: aligned host memory with usage counters, CUDA memory via engine/cuda.h.
#include "engine/storage.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "engine/cuda.h"
#include "engine/error.h"

namespace bam {
namespace {

std::atomic<size_t> g_cpu_in_use{0};
std::atomic<size_t> g_cpu_peak{0};

void* cpu_allocate(size_t nbytes) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) fail("out of host memory allocating {} bytes", nbytes);
  size_t now = g_cpu_in_use.fetch_add(nbytes) + nbytes;
  size_t peak = g_cpu_peak.load();
  while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
}

}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    data_ = cpu_allocate(nbytes);
    release_ = [nbytes](void* p) {
      std::free(p);
      g_cpu_in_use.fetch_sub(nbytes);
    };
  } else {
    data_ = cuda::device_allocate(nbytes, device.index);
    int index = device.index;
    release_ = [nbytes, index](void* p) { cuda::device_free(p, nbytes, index); };
  }
}

Storage::Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> release)
    : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}

Storage::~Storage() {
  if (data_ && release_) release_(data_);
}

size_t cpu_bytes_in_use() { return g_cpu_in_use.load(); }
size_t cpu_peak_bytes() { return g_cpu_peak.load(); }
void reset_cpu_peak_bytes() { g_cpu_peak.store(g_cpu_in_use.load()); }

}  // namespace bam
