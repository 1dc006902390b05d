// Device-side number handling shared by the CUDA kernels: the storage types of the floating
// dtypes, the type arithmetic happens in (float for f32/bf16/f16, double for f64), conversions
// with round-to-nearest-even, grid-stride launch sizes, and a runtime dtype switch. Only for .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/cpu/strided.h"

// The block's dynamic shared memory (the launch's byte count), 128-byte aligned, as `name`. The
// CUDA emulator defines its own (kernels/cuda/emulator/cuda_emulator.h).
#ifndef BAM_DYNAMIC_SHARED_MEMORY
#define BAM_DYNAMIC_SHARED_MEMORY(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace bam::cuda_kernels {

// Storage type S -> compute type (`Compute`) and the two conversions.
template <typename S>
struct Num;
template <>
struct Num<float> {
  using Compute = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <>
struct Num<double> {
  using Compute = double;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
};
template <>
struct Num<__nv_bfloat16> {
  using Compute = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Num<__half> {
  using Compute = float;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};

// Calls fn(S{}) with the storage type of a floating dtype; other dtypes fail naming the kernel.
template <typename Fn>
void dispatch_floating_storage(const char* kernel, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    case DType::bf16: fn(__nv_bfloat16{}); return;
    case DType::f16: fn(__half{}); return;
    default: fail("{} (CUDA): dtype {} is not a floating-point type", kernel, dtype_name(dtype));
  }
}

// The same for the 16-bit types alone (the tensor-core kernels) and for f32/f64 alone (kernels
// that compute in the input's precision, such as the BAM loss pieces).
template <typename Fn>
void dispatch_16bit_storage(const char* kernel, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::bf16: fn(__nv_bfloat16{}); return;
    case DType::f16: fn(__half{}); return;
    default: fail("{} (CUDA): dtype {} is not bf16 or f16", kernel, dtype_name(dtype));
  }
}
template <typename Fn>
void dispatch_wide_storage(const char* kernel, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    default: fail("{} (CUDA): dtype {} is not f32 or f64", kernel, dtype_name(dtype));
  }
}

// A grid for a grid-stride loop over n elements: enough blocks to fill the device, capped so the
// index arithmetic stays cheap; the loop covers the rest.
constexpr int kBlock = 256;
inline unsigned grid_for(int64_t n) {
  int64_t blocks = (n + kBlock - 1) / kBlock;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535L * 8) blocks = 65535L * 8;
  return static_cast<unsigned>(blocks);
}

// Shape and element strides of up to N operands over one iteration space, passed by value.
template <int N>
struct StridedIndex {
  int ndim = 0;
  int64_t shape[cpu::kMaxDims];
  int64_t strides[N][cpu::kMaxDims];

  // The element offset of each operand for the row-major linear index `linear`.
  __device__ __forceinline__ void offsets(int64_t linear, int64_t* out) const {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = 0;
    for (int k = ndim - 1; k >= 0; --k) {
      int64_t i = linear % shape[k];
      linear /= shape[k];
#pragma unroll
      for (int j = 0; j < N; ++j) out[j] += i * strides[j][k];
    }
  }
};

template <int N>
StridedIndex<N> make_strided_index(const int64_t* shape, int ndim, const int64_t* const* strides) {
  StridedIndex<N> index;
  index.ndim = ndim;
  for (int k = 0; k < ndim; ++k) {
    index.shape[k] = shape[k];
    for (int j = 0; j < N; ++j) index.strides[j][k] = strides[j][k];
  }
  return index;
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Vectorised access for the dense elementwise kernels. A thread moves K elements as one Pack: the
// 16-bit types 8 at a time, f32 4, f64 2, so each load is one 16-byte transaction (a 2-byte load
// per thread leaves most of the memory system idle). A pack wider than 16 bytes (8 floats beside 8
// bf16 in a conversion) is declared 16-byte aligned and moves as two transactions.
template <typename T, int K>
struct alignas(sizeof(T) * K < 16 ? sizeof(T) * K : 16) Pack {
  T v[K];
};
// Elements per pack so that the narrowest operand fills 16 bytes.
template <typename... T>
constexpr int pack_width() {
  size_t m = 16;
  ((m = sizeof(T) < m ? sizeof(T) : m), ...);
  return static_cast<int>(16 / m);
}
// Calls launch(std::integral_constant<int, K>{}, grid) when `aligned` (every operand is aligned for
// packs of K), else launch(std::integral_constant<int, 1>{}, grid): the kernel's pack width is a
// template parameter, the grid covers n / K packs.
template <int K, typename Launch>
void launch_packed(int64_t n, bool aligned, Launch&& launch) {
  if (aligned)
    launch(std::integral_constant<int, K>{}, grid_for((n + K - 1) / K));
  else
    launch(std::integral_constant<int, 1>{}, grid_for(n));
}
// The first index and the step of a grid-stride loop.
__device__ __forceinline__ int64_t grid_thread() { return blockIdx.x * int64_t(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }
// Whether every pointer is aligned for Pack<T, K> of its own type (views at odd offsets are not;
// their kernels take the one-element path).
template <typename T, int K>
inline bool pack_aligned(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % alignof(Pack<T, K>) == 0;
}

}  // namespace bam::cuda_kernels

namespace bam::cuda_kernels {

// Reduces v over the whole block (blockDim.x a multiple of 32, at most 1024) with `op`, whose
// identity is `identity`; every thread gets the result. Safe to call repeatedly in one kernel.
template <typename C, typename Op>
__device__ __forceinline__ C block_all_reduce(C v, Op op, C identity) {
  __shared__ C partial[32];
  __shared__ C result;
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // an earlier call has finished reading `result`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    C w = lane < warps ? partial[lane] : identity;
    for (int offset = 16; offset > 0; offset /= 2) w = op(w, __shfl_xor_sync(0xffffffffu, w, offset));
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}

struct SumOp {
  template <typename C>
  __device__ __forceinline__ C operator()(C a, C b) const {
    return a + b;
  }
};
struct MaxOp {
  template <typename C>
  __device__ __forceinline__ C operator()(C a, C b) const {
    return a > b ? a : b;
  }
};

// Blocks for one-block-per-row kernels (grid-stride over rows beyond this).
inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < 65535L * 8 ? (rows > 0 ? rows : 1) : 65535L * 8);
}

}  // namespace bam::cuda_kernels
