// What the CUDA attention implementations share (attention.cu: a thread per row, for f32 and f64;
// attention_mma.cu and attention_tc.cu: tensor cores, for bf16 and f16): the packed qkv/out
// offsets, the compile-time head dims, the tile loader and the launch grid. Only for .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "engine/cuda_check.h"
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

// tile[r][d] = src[offset(r0 + r) + d] for r < ROWS, d < DM (row stride LD in the tile); zero
// beyond N and beyond D. The block's THREADS threads share the copy. When the head dim fills the
// tile (D == DM, the tensor 16-byte aligned) each thread moves 16-byte vectors, and the
// compile-time trip counts let the loop unroll so that all of a thread's loads are in flight at
// once; otherwise (a padded head dim) element by element.
template <typename S, int DM, int ROWS, int THREADS, int LD, typename Offset>
__device__ __forceinline__ void load_tile_rows(S* tile, const S* src, int64_t r0, int64_t N, int64_t D, Offset offset) {
  constexpr int kVec = 16 / sizeof(S);  // elements per 16-byte vector
  if (D == DM && DM % kVec == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    constexpr int kPerRow = DM / kVec, kCount = ROWS * kPerRow / THREADS;
    static_assert(ROWS * kPerRow % THREADS == 0, "whole vectors per thread");
    uint4 values[kCount];
#pragma unroll
    for (int t = 0; t < kCount; ++t) {
      const int e = threadIdx.x + t * THREADS, r = e / kPerRow, c = (e % kPerRow) * kVec;
      values[t] = r0 + r < N ? *reinterpret_cast<const uint4*>(src + offset(r0 + r) + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int t = 0; t < kCount; ++t) {
      const int e = threadIdx.x + t * THREADS, r = e / kPerRow, c = (e % kPerRow) * kVec;
      *reinterpret_cast<uint4*>(tile + r * LD + c) = values[t];
    }
    return;
  }
#pragma unroll 8
  for (int e = threadIdx.x; e < ROWS * DM; e += THREADS) {
    const int r = e / DM, d = e % DM;
    tile[r * LD + d] = (r0 + r < N && d < D) ? src[offset(r0 + r) + d] : S(0.0f);
  }
}

// Launches `kernel` on THREADS threads per block with `bytes` of dynamic shared memory. Above the
// default 48 KiB a kernel must opt in, and the attribute belongs to the current device, so it is
// set at every such launch (a cheap driver call); sm_90 allows 227 KiB per block.
template <auto kernel, int THREADS, typename... Args>
void launch_with_smem(size_t bytes, dim3 grid, void* stream, Args... args) {
  if (bytes > 48 * 1024)
    BAM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  kernel<<<grid, THREADS, bytes, static_cast<cudaStream_t>(stream)>>>(args...);
  BAM_CUDA_CHECK_LAUNCH();
}

// One (image, head) pair per x, blocks of `rows_per_block` rows along y. The pairs go on x, whose
// limit is 2^31 - 1: on y (65535) a ViT-B batch of ~5,500 crops (12 heads) would not launch.
inline dim3 attention_grid(int64_t B, int64_t N, int64_t H, int64_t rows_per_block) {
  const int64_t row_blocks = (N + rows_per_block - 1) / rows_per_block;
  BAM_CHECK(B * H < (int64_t{1} << 31) && row_blocks < 65536,
            "attention (CUDA): {} (image, head) pairs and {} blocks of rows exceed the grid's limits", B * H,
            row_blocks);
  return dim3(unsigned(B * H), unsigned(row_blocks));
}

// What attention_grid's block (blockIdx) stands for: image b, head h, and the first of its
// `rows_per_block` rows.
struct GridBlock {
  int64_t b, h, row0;
};
__device__ __forceinline__ GridBlock grid_block(const PackedQkv& p, int64_t rows_per_block) {
  return {int64_t(blockIdx.x) / p.H, int64_t(blockIdx.x) % p.H, int64_t(blockIdx.y) * rows_per_block};
}

}  // namespace bam::cuda_kernels
