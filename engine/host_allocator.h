// The host allocator's settings for this engine's allocation pattern: buffers of a few hundred KB
// to a few MB (decoded images, coefficient planes, CPU tensors) allocated and freed over and over,
// often on worker threads.
#pragma once

#include <cstddef>

namespace bam {

// `nbytes` of host memory aligned to 64 bytes (and rounded up to whole 64-byte lines, with one
// line of slack), to be released with std::free: the buffers that are not page-locked. Throws
// bam::Error ("out of host memory ...") when the allocation fails, rather than return null.
void* host_allocate_aligned(size_t nbytes);

// Keeps freed memory of up to 32 MB per allocation in the heap instead of returning it to the
// kernel at once (glibc: M_MMAP_THRESHOLD 32 MB, M_TRIM_THRESHOLD 512 MB). glibc's default starts
// at 128 KB and adapts only when a large block is freed on the main thread; worker threads that
// decode JPEGs otherwise get fresh, zero-filled pages from the kernel for every image, which made
// the CPU JPEG decoder 4.5x slower in a process that had not yet freed a large block. Call it
// first thing in main(); it does nothing on other C libraries.
void tune_host_allocator();

}  // namespace bam
