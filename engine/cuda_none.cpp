// The CUDA plumbing of a build without the CUDA backend: no device, and clear errors if asked.
#include <cstdlib>

#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/host_allocator.h"

namespace bam::cuda {

namespace {
constexpr const char* kReason = "this build has no CUDA backend (configure with -DBAM_CUDA=ON)";
}

bool built_with_cuda() { return false; }
bool is_available() { return false; }
std::string unavailable_reason() { return kReason; }
int device_count() { return 0; }
std::string device_description(int index) { return "cuda:" + std::to_string(index) + " (no CUDA backend)"; }
std::string device_uuid(int) { return ""; }
void select_device(int index) { fail("cuda:{}: {}", index, kReason); }
int selected_device() { return 0; }
void use_selected_device_on_this_thread() {}
void* device_allocate(size_t, int) { fail("cannot allocate CUDA memory: {}", kReason); }
void device_free(void*, size_t, int) {}
void* device_allocate_uncached(size_t, const char* what) { fail("cannot allocate CUDA memory for {}: {}", what, kReason); }
void empty_cache() {}
MemoryStats memory_stats(int) { return {}; }
void reset_peak_memory(int) {}
size_t memory_available() { return 0; }
void copy_bytes(void*, const void*, size_t, CopyKind) { fail("cannot copy to or from CUDA: {}", kReason); }
void synchronize() {}
int64_t host_waits() { return 0; }
bool device_is_usable() { return false; }
void* current_stream() { return nullptr; }
StreamMark::~StreamMark() = default;
StreamMark::StreamMark(StreamMark&&) noexcept = default;
StreamMark& StreamMark::operator=(StreamMark&&) noexcept = default;
void StreamMark::record() {}
void StreamMark::wait() const {}
void StreamMark::wait_on_stream(void*) const {}
// Without CUDA there is no page-locking; plain aligned memory keeps callers' code paths the same.
void* host_allocate_pinned(size_t nbytes) { return host_allocate_aligned(nbytes); }
void host_free_pinned(void* ptr) { std::free(ptr); }

}  // namespace bam::cuda
