// Reductions on the GPU. Rows (inner == 1) get one block each: threads stride over the row, then
// combine through warp shuffles and shared memory. Columns (inner > 1) get one thread per output
// element, reading consecutive columns so loads coalesce across a warp.
#include <cuda/std/limits>

#include "engine/cuda_check.h"
#include "kernels/cuda/numeric.cuh"
#include "kernels/cuda/reduce.h"

namespace bam::cuda_kernels {
namespace {

using cpu::ReduceOp;

// The accumulator of a reduction: double for sums (as the CPU twin), the compute type otherwise.
template <typename C>
struct Accumulate {
  ReduceOp op;
  __device__ __forceinline__ double identity() const {
    if (op == ReduceOp::sum) return 0.0;
    return op == ReduceOp::max ? -cuda::std::numeric_limits<double>::infinity()
                               : cuda::std::numeric_limits<double>::infinity();
  }
  // NaN wins and stays: max/min propagate it, a sum with NaN is NaN anyway.
  __device__ __forceinline__ double combine(double acc, double v) const {
    if (op == ReduceOp::sum) return acc + v;
    if (isnan(acc)) return acc;
    if (isnan(v)) return v;
    return op == ReduceOp::max ? (v > acc ? v : acc) : (v < acc ? v : acc);
  }
};

template <typename S>
__global__ void reduce_rows_kernel(ReduceOp op, const S* x, S* out, int64_t rows, int64_t n) {
  using N = Num<S>;
  Accumulate<typename N::Compute> acc{op};
  __shared__ double partial[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const S* p = x + row * n;
    double value = acc.identity();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) value = acc.combine(value, double(N::load(p[i])));
    for (int offset = 16; offset > 0; offset /= 2)
      value = acc.combine(value, __shfl_down_sync(0xffffffffu, value, offset));
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    if (warp == 0) {
      int warps = blockDim.x / 32;
      value = lane < warps ? partial[lane] : acc.identity();
      for (int offset = 16; offset > 0; offset /= 2)
        value = acc.combine(value, __shfl_down_sync(0xffffffffu, value, offset));
      if (lane == 0) out[row] = N::store(typename N::Compute(value));
    }
    __syncthreads();  // partial[] is reused by the next row
  }
}

template <typename S>
__global__ void reduce_columns_kernel(ReduceOp op, const S* x, S* out, int64_t outer, int64_t reduce_size,
                                      int64_t inner) {
  using N = Num<S>;
  Accumulate<typename N::Compute> acc{op};
  int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = t / inner, i = t % inner;
    const S* p = x + o * reduce_size * inner + i;
    double value = acc.identity();
    for (int64_t r = 0; r < reduce_size; ++r) value = acc.combine(value, double(N::load(p[r * inner])));
    out[t] = N::store(typename N::Compute(value));
  }
}

template <typename S>
__global__ void arg_reduce_kernel(bool is_max, const S* x, int64_t* out, int64_t outer, int64_t reduce_size,
                                  int64_t inner) {
  using N = Num<S>;
  using C = typename N::Compute;
  int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = t / inner, i = t % inner;
    const S* p = x + o * reduce_size * inner + i;
    C best = N::load(p[0]);
    int64_t best_index = 0;
    for (int64_t r = 1; r < reduce_size && !isnan(best); ++r) {
      C v = N::load(p[r * inner]);
      if (isnan(v) || (is_max ? v > best : v < best)) {
        best = v;
        best_index = r;
      }
    }
    out[t] = best_index;
  }
}

}  // namespace

void reduce(ReduceOp op, DType dtype, const void* x, void* out, int64_t outer, int64_t reduce_size, int64_t inner,
            void* stream) {
  if (outer * inner == 0) return;
  dispatch_floating_storage("reduce", dtype, [&](auto tag) {
    using S = decltype(tag);
    if (inner == 1) {
      unsigned blocks = static_cast<unsigned>(outer < 65535 * 8 ? outer : 65535 * 8);
      reduce_rows_kernel<S><<<blocks, kBlock, 0, as_stream(stream)>>>(op, static_cast<const S*>(x),
                                                                      static_cast<S*>(out), outer, reduce_size);
    } else {
      reduce_columns_kernel<S><<<grid_for(outer * inner), kBlock, 0, as_stream(stream)>>>(
          op, static_cast<const S*>(x), static_cast<S*>(out), outer, reduce_size, inner);
    }
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void arg_reduce(bool is_max, DType dtype, const void* x, int64_t* out, int64_t outer, int64_t reduce_size,
                int64_t inner, void* stream) {
  if (outer * inner == 0) return;
  BAM_CHECK(reduce_size > 0, "arg_reduce (CUDA): cannot reduce an empty dimension");
  dispatch_floating_storage("arg_reduce", dtype, [&](auto tag) {
    using S = decltype(tag);
    arg_reduce_kernel<S><<<grid_for(outer * inner), kBlock, 0, as_stream(stream)>>>(is_max, static_cast<const S*>(x),
                                                                                    out, outer, reduce_size, inner);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
