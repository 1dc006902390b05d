// Storage allocation: aligned host memory with usage counters, CUDA memory via engine/cuda.h.
#include "engine/storage.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <optional>
#include <unordered_map>
#include <vector>

#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/whole_number.h"

namespace bam {
namespace {

std::atomic<size_t> g_cpu_in_use{0};
std::atomic<size_t> g_cpu_peak{0};

// A cache of freed host blocks by size. Training allocates the same shapes every step; without it
// every large tensor is a fresh mmap whose pages the kernel must fault in and zero again, which
// cost a third of a CPU step. Blocks beyond the cap are returned to the system.
class HostCache {
 public:
  void* take(size_t rounded) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(rounded);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= rounded;
    return p;
  }
  // Keeps the block when there is room; returns false if the caller must free it.
  bool give(void* p, size_t rounded) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ + rounded > limit()) return false;
    free_[rounded].push_back(p);
    cached_ += rounded;
    return true;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  size_t cached() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

 private:
  static size_t limit() {
    static const size_t bytes = [] {
      if (const char* env = std::getenv("BAM_CPU_CACHE_MB"))  // a bad value is refused by the tools at start
        if (const std::optional<int64_t> mib = parse_whole_number(env, 0, int64_t{1} << 30))
          return static_cast<size_t>(*mib) << 20;
      // A third of physical memory, at least 2 GiB: enough to hold a training step's tensors.
      long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
      size_t third = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 3 : 0;
      return std::max(third, size_t{2} << 30);
    }();
    return bytes;
  }
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

HostCache& host_cache() {
  static HostCache* cache = new HostCache();  // never destroyed: storages may die during exit
  return *cache;
}

// Small blocks round to 64 bytes, larger ones to 4 KiB pages so similar sizes share buckets.
size_t rounded_host_size(size_t nbytes) {
  if (nbytes <= 4096) return std::max<size_t>(64, (nbytes + 63) / 64 * 64);
  return (nbytes + 4095) / 4096 * 4096;
}

void* cpu_allocate(size_t nbytes, size_t* rounded_out) {
  size_t rounded = rounded_host_size(nbytes);
  *rounded_out = rounded;
  void* p = host_cache().take(rounded);
  if (!p) p = std::aligned_alloc(64, rounded);
  if (!p) {
    host_cache().clear();
    p = std::aligned_alloc(64, rounded);
  }
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
    size_t rounded = 0;
    data_ = cpu_allocate(nbytes, &rounded);
    release_ = [nbytes, rounded](void* p) {
      if (!host_cache().give(p, rounded)) std::free(p);
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
size_t cpu_cached_bytes() { return host_cache().cached(); }
void release_cpu_cache() { host_cache().clear(); }

}  // namespace bam
