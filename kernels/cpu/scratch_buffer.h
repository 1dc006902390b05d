// ScratchBuffer: a grow-only array aligned to 64 bytes, for the GEMMs' per-thread packed operands
// (gemm.cpp, gemm_bf16.cpp). Not for the *_avx2/_avx512/_amx files: a template instantiated there
// would be compiled for their instruction sets (tests/check_avx2_objects.sh).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

namespace bam::cpu {

template <typename T>
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { std::free(data_); }

  // Room for `count` elements; the previous contents are not kept when it grows.
  T* get(int64_t count) {
    const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    if (bytes > capacity_) {
      std::free(data_);
      data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
      capacity_ = bytes;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace bam::cpu
