// tune_host_allocator: glibc's malloc thresholds, set once at program start.
#include "engine/host_allocator.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bam {

void tune_host_allocator() {
#if defined(__GLIBC__)
  // 32 MB is glibc's largest mmap threshold on 64-bit systems; above it a block is mapped and
  // unmapped on its own as before. Setting either value turns glibc's dynamic adjustment off.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
#endif
}

}  // namespace bam
