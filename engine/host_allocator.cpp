// tune_host_allocator (glibc's malloc thresholds, set once at program start) and the aligned
// host buffers that are not page-locked.
#include "engine/host_allocator.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#include "engine/error.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bam {

void* host_allocate_aligned(size_t nbytes) {
  void* ptr = std::aligned_alloc(64, (nbytes + 63) / 64 * 64 + 64);
  BAM_CHECK(ptr != nullptr, "out of host memory allocating {:.1f} MiB", static_cast<double>(nbytes) / (1 << 20));
  return ptr;
}

void tune_host_allocator() {
#if defined(__GLIBC__)
  // 32 MB is glibc's largest mmap threshold on 64-bit systems; above it a block is mapped and
  // unmapped on its own as before. Setting either value turns glibc's dynamic adjustment off.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
#endif
}

}  // namespace bam
