// Reductions on the GPU. Rows (inner == 1) get one block each: threads stride over the row, then
// combine through warp shuffles and shared memory. Columns (inner > 1) are cut into tiles of 32
// columns times chunks of rows, each block leaving partial results that a second kernel combines
// (with a single chunk, the blocks write the results themselves).
// column_sums is the single-chunk column pass on its own, for matrices of partial sums.
// Arg reductions over rows get a block per row; over columns, a thread per output.
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

// Columns: a block covers 32 adjacent columns of one `outer` slice and one chunk of the reduced
// rows; its 8 warps' lanes read 32 consecutive elements of a row (coalesced) and stride over the
// chunk's rows together. The 8 row groups combine in shared memory, and each chunk leaves one
// partial per column in `partials` [chunks, outer * inner] (double), which reduce_chunks_kernel
// combines; with a single chunk (`partials` null) the block writes the result to `out` itself.
// Splitting the rows into chunks keeps every SM busy when there are few columns (a bias gradient:
// 384 columns of 100,000 rows) instead of one thread walking each column.
constexpr int kColumnTile = 32, kRowGroups = 8;

template <typename In, typename Out>
__global__ void __launch_bounds__(kColumnTile* kRowGroups)
    reduce_columns_kernel(ReduceOp op, const In* x, double* partials, Out* out, int64_t outer, int64_t reduce_size,
                          int64_t inner, int64_t rows_per_chunk) {
  using N = Num<In>;
  using NO = Num<Out>;
  Accumulate<typename N::Compute> acc{op};
  __shared__ double partial[kRowGroups][kColumnTile];
  const int64_t tiles_per_slice = (inner + kColumnTile - 1) / kColumnTile;
  const int64_t o = blockIdx.x / tiles_per_slice;
  const int64_t i = (blockIdx.x % tiles_per_slice) * kColumnTile + threadIdx.x;
  const int64_t r_begin = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r_end = r_begin + rows_per_chunk < reduce_size ? r_begin + rows_per_chunk : reduce_size;
  double value = acc.identity();
  if (i < inner) {
    const In* p = x + o * reduce_size * inner + i;
    for (int64_t r = r_begin + threadIdx.y; r < r_end; r += kRowGroups)
      value = acc.combine(value, double(N::load(p[r * inner])));
  }
  partial[threadIdx.y][threadIdx.x] = value;
  __syncthreads();
  if (threadIdx.y == 0 && i < inner) {
    for (int g = 1; g < kRowGroups; ++g) value = acc.combine(value, partial[g][threadIdx.x]);
    if (partials) {
      partials[int64_t(blockIdx.y) * outer * inner + o * inner + i] = value;
    } else {
      out[o * inner + i] = NO::store(typename NO::Compute(value));
    }
  }
}

template <typename S>
__global__ void reduce_chunks_kernel(ReduceOp op, const double* partials, S* out, int64_t outputs, int64_t chunks) {
  using N = Num<S>;
  Accumulate<typename N::Compute> acc{op};
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < outputs; t += int64_t(gridDim.x) * blockDim.x) {
    double value = acc.identity();
    for (int64_t c = 0; c < chunks; ++c) value = acc.combine(value, partials[c * outputs + t]);
    out[t] = N::store(typename N::Compute(value));
  }
}

// Row chunks of a column reduction: enough blocks to fill the GPU (about 2048), chunks of at least
// 64 rows.
int64_t column_chunks(int64_t outer, int64_t reduce_size, int64_t inner) {
  const int64_t tiles = outer * ((inner + kColumnTile - 1) / kColumnTile);
  int64_t chunks = (2048 + tiles - 1) / tiles;
  const int64_t most = (reduce_size + 63) / 64;
  if (chunks > most) chunks = most;
  if (chunks > 65535) chunks = 65535;
  return chunks < 1 ? 1 : chunks;
}

// Arg reductions of contiguous rows (inner == 1): one block per row, each thread keeps its best
// (value, index), then the block combines them. Ties and NaN follow the CPU twin: the first NaN
// wins, else the first extreme value, so the lower index wins every tie.
__device__ __forceinline__ bool arg_better(bool is_max, double v, int64_t i, double best, int64_t best_i) {
  if (isnan(best)) return isnan(v) && i < best_i;
  if (isnan(v)) return true;
  if (v == best) return i < best_i;
  return is_max ? v > best : v < best;
}

template <typename S>
__global__ void arg_reduce_rows_kernel(bool is_max, const S* x, int64_t* out, int64_t rows, int64_t n) {
  using N = Num<S>;
  __shared__ double best_value[32];
  __shared__ int64_t best_index[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const S* p = x + row * n;
    double best = double(N::load(p[0]));
    int64_t index = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      double v = double(N::load(p[i]));
      if (arg_better(is_max, v, i, best, index)) best = v, index = i;
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      double v = __shfl_down_sync(0xffffffffu, best, offset);
      int64_t i = __shfl_down_sync(0xffffffffu, index, offset);
      if (arg_better(is_max, v, i, best, index)) best = v, index = i;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) best_value[warp] = best, best_index[warp] = index;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < int(blockDim.x / 32); ++w)
        if (arg_better(is_max, best_value[w], best_index[w], best, index)) best = best_value[w], index = best_index[w];
      out[row] = index;
    }
    __syncthreads();  // the shared slots are reused by the next row
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

size_t reduce_scratch_bytes(int64_t outer, int64_t reduce_size, int64_t inner) {
  if (inner == 1 || outer * inner == 0) return 0;
  const int64_t chunks = column_chunks(outer, reduce_size, inner);
  return chunks == 1 ? 0 : size_t(chunks) * size_t(outer * inner) * sizeof(double);
}

void reduce(ReduceOp op, DType dtype, const void* x, void* out, int64_t outer, int64_t reduce_size, int64_t inner,
            void* scratch, void* stream) {
  if (outer * inner == 0) return;
  dispatch_floating_storage("reduce", dtype, [&](auto tag) {
    using S = decltype(tag);
    if (inner == 1) {
      unsigned blocks = static_cast<unsigned>(outer < 65535 * 8 ? outer : 65535 * 8);
      reduce_rows_kernel<S><<<blocks, kBlock, 0, as_stream(stream)>>>(op, static_cast<const S*>(x),
                                                                      static_cast<S*>(out), outer, reduce_size);
    } else {
      const int64_t chunks = column_chunks(outer, reduce_size, inner);
      const int64_t rows_per_chunk = (reduce_size + chunks - 1) / chunks;
      const int64_t tiles = outer * ((inner + kColumnTile - 1) / kColumnTile);
      BAM_CHECK(tiles <= 0x7fffffff, "reduce (CUDA): {} column tiles are too many for one launch", tiles);
      double* partials = chunks == 1 ? nullptr : static_cast<double*>(scratch);  // one chunk: no second pass
      reduce_columns_kernel<S, S>
          <<<dim3(unsigned(tiles), unsigned(chunks)), dim3(kColumnTile, kRowGroups), 0, as_stream(stream)>>>(
              op, static_cast<const S*>(x), partials, static_cast<S*>(out), outer, reduce_size, inner, rows_per_chunk);
      if (partials) {
        BAM_CUDA_CHECK_LAUNCH();
        reduce_chunks_kernel<S><<<grid_for(outer * inner), kBlock, 0, as_stream(stream)>>>(
            op, partials, static_cast<S*>(out), outer * inner, chunks);
      }
    }
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void column_sums(DType dtype, DType out_dtype, const void* x, void* out, int64_t rows, int64_t cols, void* stream) {
  if (cols == 0) return;
  const int64_t tiles = (cols + kColumnTile - 1) / kColumnTile;
  BAM_CHECK(tiles <= 0x7fffffff, "column_sums (CUDA): {} column tiles are too many for one launch", tiles);
  auto launch = [&](auto in_tag, auto out_tag) {
    using In = decltype(in_tag);
    using Out = decltype(out_tag);
    reduce_columns_kernel<In, Out><<<dim3(unsigned(tiles), 1u), dim3(kColumnTile, kRowGroups), 0, as_stream(stream)>>>(
        ReduceOp::sum, static_cast<const In*>(x), nullptr, static_cast<Out*>(out), 1, rows, cols, rows);
  };
  if (dtype == out_dtype) {
    dispatch_floating_storage("column_sums", dtype, [&](auto tag) { launch(tag, tag); });
  } else {
    BAM_CHECK(dtype == DType::f32 && (out_dtype == DType::bf16 || out_dtype == DType::f16),
              "column_sums (CUDA): {} in with {} out is not supported (f32 in, 16 bits out, or the same type)",
              dtype_name(dtype), dtype_name(out_dtype));
    if (out_dtype == DType::bf16)
      launch(float{}, __nv_bfloat16{});
    else
      launch(float{}, __half{});
  }
  BAM_CUDA_CHECK_LAUNCH();
}

void arg_reduce(bool is_max, DType dtype, const void* x, int64_t* out, int64_t outer, int64_t reduce_size,
                int64_t inner, void* stream) {
  if (outer * inner == 0) return;
  BAM_CHECK(reduce_size > 0, "arg_reduce (CUDA): cannot reduce an empty dimension");
  dispatch_floating_storage("arg_reduce", dtype, [&](auto tag) {
    using S = decltype(tag);
    if (inner == 1) {  // contiguous rows (max of a whole tensor, argmax over the last dim): a block each
      unsigned blocks = static_cast<unsigned>(outer < 65535 * 8 ? outer : 65535 * 8);
      arg_reduce_rows_kernel<S>
          <<<blocks, kBlock, 0, as_stream(stream)>>>(is_max, static_cast<const S*>(x), out, outer, reduce_size);
    } else {
      arg_reduce_kernel<S><<<grid_for(outer * inner), kBlock, 0, as_stream(stream)>>>(is_max, static_cast<const S*>(x),
                                                                                      out, outer, reduce_size, inner);
    }
  });
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
