// CUDA plumbing for builds with the backend: device discovery, the caching allocator, copies, stream.
#include "engine/cuda.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/cuda_error_slots.h"
#include "engine/host_allocator.h"

namespace bam::cuda {
namespace {

struct DeviceQuery {
  int count = 0;
  std::string reason;
};

const DeviceQuery& query_devices() {
  static DeviceQuery query = [] {
    DeviceQuery q;
    cudaError_t status = cudaGetDeviceCount(&q.count);
    if (status != cudaSuccess) {
      q.count = 0;
      q.reason = fmt::format("no usable CUDA device: {}", cudaGetErrorString(status));
      cudaGetLastError();  // clear the sticky error so later calls are not confused by it
    } else if (q.count == 0) {
      q.reason = "no CUDA device found";
    }
    return q;
  }();
  return query;
}

struct DeviceCache {
  std::multimap<size_t, void*> free_blocks;  // size -> block
  std::map<void*, size_t> block_sizes;       // every block we own, in use or cached
  MemoryStats stats;
};

std::mutex g_mutex;
std::vector<DeviceCache> g_caches;
void* g_stream = nullptr;    // nullptr: the legacy default stream (of the thread's current device)
std::atomic<int64_t> g_host_waits{0};
int g_device = 0;            // the process's device (select_device); guarded by g_mutex
bool g_device_used = false;  // set by the first allocation (or thread binding): from then on the device is fixed

DeviceCache& cache_for(int device) {
  if (g_caches.size() <= static_cast<size_t>(device)) g_caches.resize(device + 1);
  return g_caches[device];
}

}  // namespace

bool built_with_cuda() { return true; }
bool is_available() { return query_devices().count > 0; }
std::string unavailable_reason() { return is_available() ? "" : query_devices().reason; }
int device_count() { return query_devices().count; }

std::string device_description(int index) {
  if (index < 0 || index >= device_count()) return fmt::format("cuda:{} (not present)", index);
  cudaDeviceProp prop{};
  BAM_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return fmt::format("{} (sm_{}{}, {:.1f} GiB)", prop.name, prop.major, prop.minor,
                     prop.totalGlobalMem / double(1u << 30));
}

std::string device_uuid(int index) {
  cudaDeviceProp prop{};
  BAM_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  std::string hex;
  for (const char byte : prop.uuid.bytes) hex += fmt::format("{:02x}", static_cast<unsigned char>(byte));
  return hex;
}

void select_device(int index) {
  if (!is_available()) fail("cuda:{}: {}", index, unavailable_reason());
  const int count = device_count();
  BAM_CHECK(index >= 0 && index < count, "cuda:{} is not present: this machine has {} CUDA device{} (cuda:0{})", index,
            count, count == 1 ? "" : "s", count == 1 ? "" : fmt::format(" to cuda:{}", count - 1));
  std::lock_guard<std::mutex> lock(g_mutex);
  BAM_CHECK(!g_device_used || index == g_device,
            "cuda:{}: this process already runs on cuda:{} (one CUDA device per process)", index, g_device);
  BAM_CUDA_CHECK(cudaSetDevice(index));
  g_device = index;
}

int selected_device() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_device;
}

void use_selected_device_on_this_thread() {
  std::lock_guard<std::mutex> lock(g_mutex);
  BAM_CUDA_CHECK(cudaSetDevice(g_device));
  g_device_used = true;  // the caller is about to create resources there
}

namespace {

// Hands a device's cached, unused blocks back to the driver (g_mutex held).
void release_cache_locked(DeviceCache& cache) {
  for (auto& [size, block] : cache.free_blocks) {
    cudaFree(block);
    cache.block_sizes.erase(block);
    cache.stats.bytes_reserved -= size;
  }
  cache.free_blocks.clear();
}

// cudaMalloc on the current device. When the device is full, the cache's unused blocks go back to
// the driver and it is tried once more; then a failure names `what` (g_mutex held).
void* malloc_or_fail_locked(size_t size, int device_index, const char* what) {
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, size);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    release_cache_locked(cache_for(device_index));
    status = cudaMalloc(&ptr, size);
  }
  if (status != cudaSuccess) {
    // Clear a non-sticky error, so that it is not reported again by the next unrelated launch
    // check; a sticky one (an earlier kernel's illegal address, say) stays and says so itself.
    (void)cudaGetLastError();
    fail("{} allocating {:.1f} MiB for {} on cuda:{} ({:.1f} MiB in use by tensors): {}",
         status == cudaErrorMemoryAllocation ? "CUDA out of memory" : "cudaMalloc failed", size / 1048576.0, what,
         device_index, cache_for(device_index).stats.bytes_in_use / 1048576.0, cudaGetErrorString(status));
  }
  return ptr;
}

}  // namespace

void* device_allocate_uncached(size_t nbytes, const char* what) {
  if (!is_available()) fail("cannot allocate CUDA memory for {}: {}", what, unavailable_reason());
  std::lock_guard<std::mutex> lock(g_mutex);
  BAM_CUDA_CHECK(cudaSetDevice(g_device));
  g_device_used = true;
  return malloc_or_fail_locked(nbytes == 0 ? 1 : nbytes, g_device, what);
}

void* device_allocate(size_t nbytes, int device_index) {
  if (!is_available()) fail("cannot allocate CUDA memory: {}", unavailable_reason());
  size_t size = allocation_size(nbytes);
  std::lock_guard<std::mutex> lock(g_mutex);
  BAM_CHECK(device_index == g_device,
            "cannot allocate on cuda:{}: this process runs on cuda:{} (one CUDA device per process; choose it "
            "with --device cuda:N or CUDA_VISIBLE_DEVICES)",
            device_index, g_device);
  g_device_used = true;
  DeviceCache& cache = cache_for(device_index);
  void* ptr = nullptr;
  auto it = cache.free_blocks.lower_bound(size);
  // Reuse a cached block unless it is much larger than asked (then it would waste memory).
  if (it != cache.free_blocks.end() && it->first <= size * 2) {
    ptr = it->second;
    size = it->first;
    cache.free_blocks.erase(it);
  } else {
    BAM_CUDA_CHECK(cudaSetDevice(device_index));
    ptr = malloc_or_fail_locked(size, device_index, "tensor storage");
    cache.block_sizes[ptr] = size;
    cache.stats.bytes_reserved += size;
  }
  cache.stats.bytes_in_use += size;
  cache.stats.peak_bytes_in_use = std::max(cache.stats.peak_bytes_in_use, cache.stats.bytes_in_use);
  // Tests set BAM_CUDA_POISON=1: every block starts as NaN bytes (0xFF), so a kernel that leaves
  // part of its output unwritten fails its comparison instead of passing on leftover values.
  static const bool poison = [] {
    const char* v = std::getenv("BAM_CUDA_POISON");
    return v && v[0] == '1';
  }();
  if (poison) BAM_CUDA_CHECK(cudaMemsetAsync(ptr, 0xFF, size, static_cast<cudaStream_t>(current_stream())));
  return ptr;
}

void device_free(void* ptr, size_t /*nbytes*/, int device_index) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceCache& cache = cache_for(device_index);
  auto it = cache.block_sizes.find(ptr);
  if (it == cache.block_sizes.end()) return;  // not ours: never happens for engine storage
  cache.stats.bytes_in_use -= it->second;
  cache.free_blocks.emplace(it->second, ptr);
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& cache : g_caches) release_cache_locked(cache);
}

MemoryStats memory_stats(int device_index) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return cache_for(device_index).stats;
}

void reset_peak_memory(int device_index) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& stats = cache_for(device_index).stats;
  stats.peak_bytes_in_use = stats.bytes_in_use;
}

size_t memory_available() {
  if (!is_available()) return 0;
  std::lock_guard<std::mutex> lock(g_mutex);
  BAM_CUDA_CHECK(cudaSetDevice(g_device));
  size_t free_bytes = 0, total_bytes = 0;
  BAM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const MemoryStats& stats = cache_for(g_device).stats;
  return free_bytes + (stats.bytes_reserved - stats.bytes_in_use);
}

void copy_bytes(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  if (nbytes == 0) return;
  cudaMemcpyKind k = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                        : cudaMemcpyDeviceToDevice;
  auto stream = static_cast<cudaStream_t>(g_stream);
  BAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, k, stream));
  // Copies to pageable host memory must be complete before the caller reads the buffer; the
  // errors the kernels before it found are thrown (by synchronize) before the caller sees their
  // results.
  if (kind == CopyKind::device_to_host) synchronize();
}

void synchronize() {
  const int64_t launches = error_slots_taken();
  g_host_waits.fetch_add(1, std::memory_order_relaxed);
  BAM_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(g_stream)));
  throw_reported_errors(launches);
}
int64_t host_waits() { return g_host_waits.load(std::memory_order_relaxed); }
bool device_is_usable() {
  if (cudaDeviceSynchronize() != cudaSuccess) return false;
  (void)cudaGetLastError();
  return cudaPeekAtLastError() == cudaSuccess;
}
void* current_stream() { return g_stream; }

StreamMark::~StreamMark() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}
StreamMark::StreamMark(StreamMark&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)), device_(other.device_), recorded_(std::exchange(other.recorded_, false)) {}
StreamMark& StreamMark::operator=(StreamMark&& other) noexcept {
  if (this != &other) {
    if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = std::exchange(other.event_, nullptr);
    device_ = other.device_;
    recorded_ = std::exchange(other.recorded_, false);
  }
  return *this;
}

void StreamMark::record() {
  if (!is_available()) return;
  if (!event_) {
    // Blocking sync: a waiting thread sleeps instead of spinning on a core the loader needs.
    cudaEvent_t event;
    BAM_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming | cudaEventBlockingSync));
    event_ = event;
    BAM_CUDA_CHECK(cudaGetDevice(&device_));
  }
  BAM_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(g_stream)));
  recorded_ = true;
}

void StreamMark::wait_on_stream(void* stream) const {
  if (!recorded_) return;
  BAM_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event_), 0));
}

void StreamMark::wait() const {
  if (!recorded_) return;
  int current = 0;
  BAM_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device_) BAM_CUDA_CHECK(cudaSetDevice(device_));
  BAM_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

// Without a usable device there is nothing to page-lock for: plain aligned memory keeps the
// callers' code paths the same (is_available() never changes within a process).
void* host_allocate_pinned(size_t nbytes) {
  if (!is_available()) return host_allocate_aligned(nbytes);
  void* ptr = nullptr;
  BAM_CUDA_CHECK(cudaMallocHost(&ptr, nbytes == 0 ? 1 : nbytes));
  return ptr;
}
void host_free_pinned(void* ptr) {
  if (!ptr) return;
  if (!is_available()) std::free(ptr);
  else cudaFreeHost(ptr);
}

}  // namespace bam::cuda
