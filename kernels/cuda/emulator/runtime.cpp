// The CUDA emulator's runtime: the CUDA runtime API calls this project makes, defined over host
// memory, for binaries that link the emulator instead of libcudart. One device, "cuda:0", with
// sm_90's limits. Launches run when issued. An asynchronous copy between device memory and
// page-locked host memory is held back, as a GPU behind a busy queue holds it back, until a call
// must see it done: any launch or GEMM, a synchronous copy, a memset or a free completes every
// held copy; a stream's synchronize (or destroy) completes the copies queued on it (the legacy
// default stream and blocking streams count as one queue); waiting for an event
// completes those queued on its stream before it was recorded. Host code that rewrites (or reads)
// a page-locked buffer before the right wait reads the copy wrong here too. Every other call
// completes before it returns. Device blocks carry guard bytes on both sides,
// checked after every launch and at cudaFree, so a kernel that writes out of bounds is named; the
// device side of a copy or memset must lie inside one device block. Under AddressSanitizer the
// guards are unaddressable instead, so that a read out of bounds is caught too, where it happens.
#include <cuda_runtime_api.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/emulator/emulator_state.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define BAM_EMU_ADDRESS_SANITIZER 1
#endif

struct CUstream_st {
  bool blocking = true;  // false: created with cudaStreamNonBlocking
};
struct CUevent_st {
  double seconds = 0;             // host time at the last record
  uint64_t copies_before = 0;     // held copies issued before the last record
  cudaStream_t stream = nullptr;  // recorded on (nullptr: the legacy default stream)
  bool stream_blocking = true;
};

namespace bam::emu {
namespace {

constexpr size_t kGuard = 64;
constexpr unsigned char kGuardByte = 0xa5;
constexpr size_t kDeviceBytes = size_t(16) << 30;  // what the emulated device reports as its memory

std::mutex g_mutex;
thread_local cudaError_t t_last_error = cudaSuccess;
std::map<const void*, size_t> g_shared_limits;
std::map<unsigned char*, size_t> g_blocks;  // user pointer -> size
size_t g_allocated = 0;
std::map<const unsigned char*, size_t> g_pinned;  // page-locked host blocks -> size

// Asynchronous copies to or from page-locked host memory, not yet done, oldest first. They are done
// holding g_copies_mutex, so that a launch that completes them never overlaps one in progress.
struct HeldCopy {
  uint64_t sequence;  // issue order
  cudaStream_t stream;
  bool stream_blocking;  // the stream synchronises with the legacy default stream (nullptr)
  void* dst;
  const void* src;
  size_t count;
};
std::mutex g_copies_mutex;
std::vector<HeldCopy> g_held_copies;
uint64_t g_copies_issued = 0;

// The legacy default stream (null) and the streams created without cudaStreamNonBlocking are
// ordered with one another.
bool is_blocking(cudaStream_t stream) { return stream == nullptr || stream->blocking; }

// Whether work on `stream` is ordered after a copy held on `copy`'s stream, as CUDA orders it: the
// same stream, or the legacy default stream and a blocking stream (either way round).
bool same_queue(const HeldCopy& copy, cudaStream_t stream, bool stream_blocking) {
  if (copy.stream == stream) return true;
  if (stream == nullptr) return copy.stream_blocking;
  return stream_blocking && copy.stream == nullptr;
}

// Does the held copies that `wanted` picks, in issue order; the others stay held.
template <typename Pick>
void complete_held_copies_if(Pick wanted) {
  std::lock_guard<std::mutex> lock(g_copies_mutex);
  if (g_held_copies.empty()) return;  // the usual case, before every launch
  std::vector<HeldCopy> kept;
  for (const HeldCopy& c : g_held_copies) {
    if (wanted(c))
      std::memmove(c.dst, c.src, c.count);
    else
      kept.push_back(c);
  }
  g_held_copies.swap(kept);
}

void complete_copies_on(cudaStream_t stream) {
  const bool blocking = is_blocking(stream);
  complete_held_copies_if([&](const HeldCopy& c) { return same_queue(c, stream, blocking); });
}

// A device block of `size` bytes at p: 256 bytes before it (p is 256-byte aligned, as cudaMalloc's
// blocks are), then 256 or more after it, up to a multiple of 256.
size_t bytes_around(size_t size) { return (size + 2 * 256 + 255) / 256 * 256; }

// Writes the guard bytes on both sides of the block (under AddressSanitizer: makes all the bytes
// around it unaddressable).
void set_guards(unsigned char* p, size_t size) {
#if BAM_EMU_ADDRESS_SANITIZER
  ASAN_POISON_MEMORY_REGION(p - 256, 256);
  ASAN_POISON_MEMORY_REGION(p + size, bytes_around(size) - 256 - size);
#else
  std::memset(p - kGuard, kGuardByte, kGuard);
  std::memset(p + size, kGuardByte, kGuard);
#endif
}

bool guards_intact([[maybe_unused]] unsigned char* p, [[maybe_unused]] size_t size) {
#if BAM_EMU_ADDRESS_SANITIZER
  return true;  // a write to them has been reported where it happened
#endif
  static const std::array<unsigned char, kGuard> pattern = [] {
    std::array<unsigned char, kGuard> a;
    a.fill(kGuardByte);
    return a;
  }();
  return std::memcmp(p - kGuard, pattern.data(), kGuard) == 0 && std::memcmp(p + size, pattern.data(), kGuard) == 0;
}

// Whether [p, p + n) lies inside one of the blocks (start -> size) of `blocks`.
template <typename Blocks>
bool inside_one(const Blocks& blocks, const void* p, size_t n) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto* q = static_cast<unsigned char*>(const_cast<void*>(p));
  auto it = blocks.upper_bound(q);
  if (it == blocks.begin()) return false;
  --it;
  return q >= it->first && q + n <= it->first + it->second;
}
bool in_device_block(const void* p, size_t n) { return inside_one(g_blocks, p, n); }
bool in_pinned_block(const void* p, size_t n) { return inside_one(g_pinned, p, n); }

// A copy or memset whose device side is not inside one device block: on a GPU, an invalid
// argument or a fault; here, a report and cudaErrorInvalidValue (BAM_CUDA_CHECK names the call).
cudaError_t outside_device_memory(const char* call, const char* side, size_t n) {
  std::fprintf(stderr, "CUDA emulator: %s of %zu bytes: the %s is not inside one device block\n", call, n, side);
  return cudaErrorInvalidValue;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void set_launch_error(cudaError_t error) { t_last_error = error; }

void complete_held_copies() {
  complete_held_copies_if([](const HeldCopy&) { return true; });
}

size_t shared_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_shared_limits.find(kernel);
  return it == g_shared_limits.end() ? 0 : it->second;
}

void check_device_guards(const char* file, int line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& [p, size] : g_blocks)
    if (!guards_intact(p, size)) {
      // Reported once: the guards are restored, so that later launches and cudaFree go on.
      set_guards(p, size);
      throw std::runtime_error("CUDA emulator: the kernel launched at " + std::string(file) + ":" +
                               std::to_string(line) + " wrote outside a device block of " + std::to_string(size) +
                               " bytes");
    }
}

}  // namespace bam::emu

using namespace bam::emu;

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "the CUDA emulator (CPU)");
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = kDeviceBytes;
  prop->multiProcessorCount = kEmulatedSms;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = kMaxThreadsPerBlock;
  prop->sharedMemPerBlock = kDefaultSharedLimit;
  prop->sharedMemPerBlockOptin = kOptInSharedLimit;
  prop->maxThreadsPerMultiProcessor = kMaxThreadsPerSm;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = kEmulatedSms; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = kMaxThreadsPerSm; return cudaSuccess;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = kMaxBlocksPerSm; return cudaSuccess;
    default: return cudaErrorInvalidValue;  // the engine asks for no other
  }
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void*, int block_size, size_t) {
  if (block_size <= 0 || block_size > kMaxThreadsPerBlock) return cudaErrorInvalidValue;
  *blocks = std::min(kMaxBlocksPerSm, kMaxThreadsPerSm / block_size);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || static_cast<size_t>(value) > kOptInSharedLimit) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_shared_limits[func] = static_cast<size_t>(value);
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error (CUDA emulator)";
  }
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_allocated + size > kDeviceBytes) return cudaErrorMemoryAllocation;
  auto* raw = static_cast<unsigned char*>(std::aligned_alloc(256, bytes_around(size)));
  if (!raw) return cudaErrorMemoryAllocation;
  unsigned char* p = raw + 256;
  set_guards(p, size);
#if BAM_EMU_ADDRESS_SANITIZER
  // Device memory still allocated at exit is the driver's to reclaim, not a host leak (the
  // engine's cache keeps its blocks to the end): LeakSanitizer leaves it out.
  __lsan_ignore_object(raw);
#endif
  g_blocks[p] = size;
  g_allocated += size;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  *free_bytes = kDeviceBytes - g_allocated;
  *total_bytes = kDeviceBytes;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  complete_held_copies();
  if (!ptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_blocks.find(static_cast<unsigned char*>(ptr));
  if (it == g_blocks.end()) return cudaErrorInvalidValue;
  if (!guards_intact(it->first, it->second)) {
    std::fprintf(stderr, "CUDA emulator: cudaFree of a block of %zu bytes whose guard bytes were overwritten\n",
                 it->second);
    std::abort();
  }
  g_allocated -= it->second;
#if BAM_EMU_ADDRESS_SANITIZER
  ASAN_UNPOISON_MEMORY_REGION(it->first - 256, bytes_around(it->second));
#endif
  std::free(it->first - 256);
  g_blocks.erase(it);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  *ptr = std::malloc(size ? size : 1);
  if (!*ptr) return cudaErrorMemoryAllocation;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_pinned[static_cast<const unsigned char*>(*ptr)] = size;
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) { return cudaMallocHost(ptr, size); }
// Mapped page-locked memory: the emulated device addresses host memory as the host does.
cudaError_t cudaHostGetDevicePointer(void** device_ptr, void* host_ptr, unsigned int flags) {
  if (!host_ptr || flags != 0 || !in_pinned_block(host_ptr, 1)) return cudaErrorInvalidValue;
  *device_ptr = host_ptr;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  complete_held_copies();
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_pinned.erase(static_cast<const unsigned char*>(ptr));
  }
  std::free(ptr);
  return cudaSuccess;
}

namespace {

// A copy's checks, then: held back when asynchronous and its host side is page-locked, else done.
cudaError_t copy(const char* call, void* dst, const void* src, size_t count, cudaMemcpyKind kind, bool async,
                 cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_device && !in_device_block(dst, count)) return outside_device_memory(call, "destination", count);
  if (src_device && !in_device_block(src, count)) return outside_device_memory(call, "source", count);
  const bool held = async && ((kind == cudaMemcpyHostToDevice && in_pinned_block(src, count)) ||
                              (kind == cudaMemcpyDeviceToHost && in_pinned_block(dst, count)));
  if (held) {
    std::lock_guard<std::mutex> lock(g_copies_mutex);
    g_held_copies.push_back({g_copies_issued++, stream, is_blocking(stream), dst, src, count});
    return cudaSuccess;
  }
  complete_held_copies();
  std::memmove(dst, src, count);
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  return copy("cudaMemcpy", dst, src, count, kind, false, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  return copy("cudaMemcpyAsync", dst, src, count, kind, true, stream);
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  complete_held_copies();
  if (count == 0) return cudaSuccess;
  if (!in_device_block(ptr, count)) return outside_device_memory("cudaMemset", "destination", count);
  std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) { return cudaMemset(ptr, value, count); }
cudaError_t cudaMemset2DAsync(void* ptr, size_t pitch, int value, size_t width, size_t height, cudaStream_t) {
  complete_held_copies();
  if (width > pitch && height > 1) return cudaErrorInvalidValue;
  if (height > 0 && width > 0 && !in_device_block(ptr, (height - 1) * pitch + width))
    return outside_device_memory("cudaMemset2DAsync", "destination", (height - 1) * pitch + width);
  for (size_t r = 0; r < height; ++r) std::memset(static_cast<unsigned char*>(ptr) + r * pitch, value, width);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  complete_held_copies();
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  *stream = new CUstream_st;
  (*stream)->blocking = (flags & cudaStreamNonBlocking) == 0;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  complete_copies_on(stream);  // its queued work still runs
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  complete_copies_on(stream);
  return cudaSuccess;
}
// Later work on the stream waits for the event; kernels complete every held copy anyway, and held
// copies complete in issue order, so there is nothing to do here.
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned int) {
  return event ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) { return cudaEventCreate(event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return cudaErrorInvalidResourceHandle;
  event->seconds = now_seconds();
  std::lock_guard<std::mutex> lock(g_copies_mutex);
  event->copies_before = g_copies_issued;
  event->stream = stream;
  event->stream_blocking = is_blocking(stream);
  return cudaSuccess;
}
namespace {
// Waiting for an event completes the copies queued before it on its stream, and no others.
void complete_copies_before(cudaEvent_t event) {
  complete_held_copies_if([&](const HeldCopy& c) {
    return c.sequence < event->copies_before && same_queue(c, event->stream, event->stream_blocking);
  });
}
}  // namespace
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return cudaErrorInvalidResourceHandle;
  complete_copies_before(event);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end) return cudaErrorInvalidResourceHandle;
  *ms = static_cast<float>((end->seconds - start->seconds) * 1e3);
  return cudaSuccess;
}

}  // extern "C"
