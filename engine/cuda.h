// The CUDA plumbing the engine needs everywhere: is there a device, device memory behind a caching
// allocator, host<->device copies, the current stream. Compiled against the CUDA runtime when the
// backend is built (engine/cuda.cpp), and as "no CUDA in this build" otherwise (engine/cuda_none.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bam::cuda {

// True when this build has the CUDA backend.
bool built_with_cuda();
// True when the backend is built and at least one device answers. Any error from the driver
// (for example "CUDA driver version is insufficient" on a machine without a GPU) means "no device".
bool is_available();
// Why is_available() is false, in words ("built without CUDA", the driver's message, ...).
std::string unavailable_reason();
int device_count();
// The device name and compute capability, e.g. "NVIDIA H200 (sm_90)".
std::string device_description(int index);
// The device's UUID as 32 hex digits: what tells two processes they use the same GPU, whatever
// index each sees it under ("" without the CUDA backend).
std::string device_uuid(int index);

// One CUDA device per process, as one rank of a multi-GPU job runs on one GPU: every CUDA tensor
// lives on it and all work runs on its stream. It is cuda:0 unless select_device() picks another
// before the first allocation or thread binding (below); a tensor on any other device is refused
// with an error naming both.
// select_device() checks that the device is present and makes it current on the calling thread.
void select_device(int index);
int selected_device();
// Makes the selected device current on the calling thread and fixes it for the process: code that
// creates its own CUDA resources (the GPU loader's streams, events and buffers, on its constructor's
// thread and its launcher thread) calls it first, since a new thread starts on cuda:0.
void use_selected_device_on_this_thread();

// Device memory through the caching allocator: freed blocks are kept for reuse by later
// allocations on the same device (all work runs on one stream per device, so reuse is ordered).
void* device_allocate(size_t nbytes, int device_index);
void device_free(void* ptr, size_t nbytes, int device_index);
// Returns cached, unused blocks to the driver.
void empty_cache();
// Device memory outside the cache, on the process's device, for code that keeps its own buffers
// and uses them on its own stream (the GPU loader): free it with cudaFree. A full device first
// gets the cache's unused blocks back; a failure names `what`.
void* device_allocate_uncached(size_t nbytes, const char* what);

struct MemoryStats {
  size_t bytes_in_use = 0;  // held by live tensors
  size_t peak_bytes_in_use = 0;
  size_t bytes_reserved = 0;  // in use + cached
};
MemoryStats memory_stats(int device_index);
void reset_peak_memory(int device_index);
// The bytes the caching allocator takes for a tensor of `nbytes`: rounded up to 512 bytes, and
// from 1 MiB on to a multiple of 2 MiB (so that freed blocks fit later requests). For estimates of
// what a computation will hold on the device.
inline size_t allocation_size(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (nbytes < (size_t{1} << 20)) return (nbytes + 511) / 512 * 512;
  return (nbytes + (size_t{2} << 20) - 1) / (size_t{2} << 20) * (size_t{2} << 20);
}

// Bytes a new allocation can still get on the process's device: what the driver has free plus the
// caching allocator's unused blocks. 0 without a device. Code that would move a large buffer to the
// device (the evaluations' features) checks it first and stays on the host when it does not fit.
size_t memory_available();

// Copies nbytes between host and device memory (either direction, or device to device) on the
// current stream. Host memory that is not page-locked makes the copy synchronous.
enum class CopyKind { host_to_device, device_to_host, device_to_device };
void copy_bytes(void* dst, const void* src, size_t nbytes, CopyKind kind);
// Waits for all work queued on the current stream.
void synchronize();
// How many times the host has waited for the current stream so far (each device-to-host copy and
// each synchronize()): every wait drains the queue and leaves the GPU idle until the host
// launches again, so a training step should wait once. The trainer and bench-step report it.
int64_t host_waits();
// Waits for the device and reports whether it can still run work: false after a sticky error (an
// illegal address in a kernel, say), which poisons the context for the rest of the process.
// A non-sticky error left by a failed call is cleared.
bool device_is_usable();
// The stream kernels launch on (a cudaStream_t, opaque here so this header needs no CUDA headers).
// All engine work runs on this one stream, and the caching allocator relies on it: a freed block
// is reused at once, which is safe only because every later use is queued behind every earlier
// one. Work on another stream (the GPU loader's copies and kernels) uses its own buffers and
// events.
void* current_stream();

// A mark in the current stream's queue that any host thread can wait for: record() queues it
// behind the work queued so far, and wait() blocks the calling thread, asleep rather than
// spinning, until that work has run. Waiting on it is not a host wait of the engine's (the stream
// is not drained: later work stays queued). Without a device both do nothing. The CPU loader
// marks the stream each time it hands out a batch, and refills the previous batch's page-locked
// buffer only after the mark, so an upload queued from that buffer has read it first. The GPU
// loader's stream waits on such a mark before it rewrites the output buffers of a batch the
// trainer has finished with (wait_on_stream).
class StreamMark {
 public:
  StreamMark() = default;
  ~StreamMark();
  StreamMark(StreamMark&& other) noexcept;
  StreamMark& operator=(StreamMark&& other) noexcept;
  StreamMark(const StreamMark&) = delete;
  StreamMark& operator=(const StreamMark&) = delete;

  void record();
  void wait() const;  // returns at once if never recorded
  // Makes the work queued on `stream` (a cudaStream_t of the same device) from now on wait for the
  // marked work, on the device: the host does not block. Nothing to wait for if never recorded.
  void wait_on_stream(void* stream) const;

 private:
  void* event_ = nullptr;  // cudaEvent_t, created by the first record()
  int device_ = 0;         // the device it was recorded on (a new thread starts on cuda:0)
  bool recorded_ = false;
};

// Page-locked host memory for fast, asynchronous uploads (data loader batch buffers).
void* host_allocate_pinned(size_t nbytes);
void host_free_pinned(void* ptr);

}  // namespace bam::cuda
