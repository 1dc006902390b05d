// What the two CUDA attention implementations share (attention.cu: a thread per row, for f32 and
// f64; attention_tc.cu: tensor cores, for bf16 and f16): the packed qkv/out offsets, the
// compile-time head dims, and the launch grid. Only for .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "engine/error.h"

namespace bam::cuda_kernels {

// Element offsets inside packed qkv [B, N, 3, H, D] and out [B, N, H*D].
struct PackedQkv {
  int64_t N, H, D;
  __device__ __forceinline__ int64_t q(int64_t b, int64_t i, int64_t h) const {
    return ((b * N + i) * 3) * H * D + h * D;
  }
  __device__ __forceinline__ int64_t k(int64_t b, int64_t i, int64_t h) const { return q(b, i, h) + H * D; }
  __device__ __forceinline__ int64_t v(int64_t b, int64_t i, int64_t h) const { return q(b, i, h) + 2 * H * D; }
  __device__ __forceinline__ int64_t o(int64_t b, int64_t i, int64_t h) const { return (b * N + i) * H * D + h * D; }
};

// Calls fn(std::integral_constant<int, DM>) for the smallest supported DM >= D (the head dim the
// kernels are compiled for; a smaller D is zero-padded inside them).
template <typename Fn>
void dispatch_head_dim(int64_t D, Fn&& fn) {
  if (D <= 16)
    fn(std::integral_constant<int, 16>{});
  else if (D <= 32)
    fn(std::integral_constant<int, 32>{});
  else if (D <= 64)
    fn(std::integral_constant<int, 64>{});
  else if (D <= 128)
    fn(std::integral_constant<int, 128>{});
  else
    fail("attention (CUDA): head dim {} is larger than the supported 128", D);
}

// Blocks of `rows_per_block` rows along x, one (image, head) pair per y.
inline dim3 attention_grid(int64_t B, int64_t N, int64_t H, int64_t rows_per_block) {
  BAM_CHECK(B * H < 65536, "attention (CUDA): B * H = {} exceeds the grid's y limit", B * H);
  return dim3(unsigned((N + rows_per_block - 1) / rows_per_block), unsigned(B * H));
}

}  // namespace bam::cuda_kernels
