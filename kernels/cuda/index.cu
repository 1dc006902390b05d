// Indexing kernels on the GPU: one thread per element of the indexed side. Gathers move words of
// the element's size; scatters add atomically in f32 or f64 (the op sums bf16/f16 tensors in f32).
#include "engine/cuda_check.h"
#include "kernels/cuda/index.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

// `error` is page-locked host memory (engine/cuda_error_slots.h): plain stores, no atomics, which
// mapped memory does not promise. Racing threads each store a bad index; whichever lands is reported.
// Each thread stores once (`reported`), so an index that is bad everywhere costs one write across
// the bus per thread, not per element.
__device__ __forceinline__ void report(int64_t* error, int64_t bad, bool& reported) {
  if (reported) return;
  reported = true;
  volatile int64_t* slot = error;
  slot[1] = bad;
  slot[0] = 1;
}

// per_slice_index: the index has one entry per (o, j, i) (gather) or one per j (index_select).
template <typename W>
__global__ void gather_kernel(const W* x, const int64_t* index, W* out, int64_t total, int64_t x_dim, int64_t index_dim,
                              int64_t inner, bool per_slice_index, int64_t* error) {
  bool reported = false;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t i = t % inner, j = (t / inner) % index_dim, o = t / (inner * index_dim);
    int64_t k = index[per_slice_index ? t : j];
    if (k < 0 || k >= x_dim) {
      report(error, k, reported);
      continue;
    }
    out[t] = x[(o * x_dim + k) * inner + i];
  }
}

template <typename S>
__global__ void scatter_add_kernel(S* out, const int64_t* index, const S* src, int64_t total, int64_t out_dim,
                                   int64_t index_dim, int64_t inner, bool per_slice_index, int64_t* error) {
  bool reported = false;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t i = t % inner, j = (t / inner) % index_dim, o = t / (inner * index_dim);
    int64_t k = index[per_slice_index ? t : j];
    if (k < 0 || k >= out_dim) {
      report(error, k, reported);
      continue;
    }
    atomicAdd(&out[(o * out_dim + k) * inner + i], src[t]);
  }
}

// The CPU twin's order: NaN above every value (first when largest, last when smallest; lower
// index first among NaNs), then by value, then by index.
template <typename C>
__device__ __forceinline__ bool topk_before(C va, int64_t a, C vb, int64_t b, bool largest) {
  bool na = isnan(va), nb = isnan(vb);
  if (na || nb) return na && nb ? a < b : (largest ? na : nb);
  if (va != vb) return largest ? va > vb : va < vb;
  return a < b;
}

constexpr int kTopkBlock = 256;

// Pass j finds the first element, in that order, among those after pass j-1's pick.
template <typename S>
__global__ void topk_kernel(const S* x, S* values, int64_t* indices, int64_t rows, int64_t cols, int64_t k,
                            bool largest) {
  using C = typename Num<S>::Compute;
  __shared__ C best_v[kTopkBlock];
  __shared__ int64_t best_i[kTopkBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* row = x + r * cols;
    C prev_v = 0;
    int64_t prev_i = -1;
    for (int64_t j = 0; j < k; ++j) {
      C bv = 0;
      int64_t bi = -1;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        C v = Num<S>::load(row[c]);
        if (prev_i >= 0 && !topk_before(prev_v, prev_i, v, c, largest)) continue;
        if (bi < 0 || topk_before(v, c, bv, bi, largest)) {
          bv = v;
          bi = c;
        }
      }
      best_v[threadIdx.x] = bv;
      best_i[threadIdx.x] = bi;
      __syncthreads();
      for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) {
          int o = threadIdx.x + s;
          if (best_i[o] >= 0 &&
              (best_i[threadIdx.x] < 0 || topk_before(best_v[o], best_i[o], best_v[threadIdx.x], best_i[threadIdx.x],
                                                      largest))) {
            best_v[threadIdx.x] = best_v[o];
            best_i[threadIdx.x] = best_i[o];
          }
        }
        __syncthreads();
      }
      prev_v = best_v[0];
      prev_i = best_i[0];
      if (threadIdx.x == 0) {
        values[r * k + j] = Num<S>::store(prev_v);
        indices[r * k + j] = prev_i;
      }
      __syncthreads();  // best_* is rewritten by the next pass
    }
  }
}

template <typename Fn>
void dispatch_word(const char* kernel, DType dtype, Fn&& fn) {
  switch (dtype_size(dtype)) {
    case 1: fn(uint8_t{}); return;
    case 2: fn(uint16_t{}); return;
    case 4: fn(uint32_t{}); return;
    case 8: fn(uint64_t{}); return;
    default: fail("{} (CUDA): unsupported element size of {}", kernel, dtype_name(dtype));
  }
}

void launch_gather(const char* name, DType dtype, const void* x, const int64_t* index, void* out, int64_t outer,
                   int64_t x_dim, int64_t index_dim, int64_t inner, bool per_slice, int64_t* error, void* stream) {
  int64_t total = outer * index_dim * inner;
  if (total == 0) return;
  dispatch_word(name, dtype, [&](auto word) {
    using W = decltype(word);
    gather_kernel<W><<<grid_for(total), kBlock, 0, as_stream(stream)>>>(
        static_cast<const W*>(x), index, static_cast<W*>(out), total, x_dim, index_dim, inner, per_slice, error);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void launch_scatter(const char* name, DType dtype, void* out, const int64_t* index, const void* src, int64_t outer,
                    int64_t out_dim, int64_t index_dim, int64_t inner, bool per_slice, int64_t* error, void* stream) {
  int64_t total = outer * index_dim * inner;
  if (total == 0) return;
  auto launch = [&](auto tag) {
    using S = decltype(tag);
    scatter_add_kernel<S><<<grid_for(total), kBlock, 0, as_stream(stream)>>>(
        static_cast<S*>(out), index, static_cast<const S*>(src), total, out_dim, index_dim, inner, per_slice, error);
  };
  switch (dtype) {
    case DType::f32: launch(float{}); break;
    case DType::f64: launch(double{}); break;
    default: fail("{} (CUDA): sums in f32 or f64, got {} (the op widens bf16/f16 first)", name, dtype_name(dtype));
  }
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gather(DType dtype, const void* x, const int64_t* index, void* out, int64_t outer, int64_t x_dim,
            int64_t index_dim, int64_t inner, int64_t* error, void* stream) {
  launch_gather("gather", dtype, x, index, out, outer, x_dim, index_dim, inner, true, error, stream);
}

void scatter_add(DType dtype, void* out, const int64_t* index, const void* src, int64_t outer, int64_t out_dim,
                 int64_t index_dim, int64_t inner, int64_t* error, void* stream) {
  launch_scatter("scatter_add", dtype, out, index, src, outer, out_dim, index_dim, inner, true, error, stream);
}

void index_select(DType dtype, const void* x, const int64_t* index, void* out, int64_t outer, int64_t x_dim,
                  int64_t num_indices, int64_t inner, int64_t* error, void* stream) {
  launch_gather("index_select", dtype, x, index, out, outer, x_dim, num_indices, inner, false, error, stream);
}

void topk(DType dtype, const void* x, void* values, int64_t* indices, int64_t rows, int64_t cols, int64_t k,
          bool largest, void* stream) {
  if (rows == 0 || k == 0) return;
  dispatch_floating_storage("topk", dtype, [&](auto tag) {
    using S = decltype(tag);
    topk_kernel<S><<<row_blocks(rows), kTopkBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(x), static_cast<S*>(values), indices, rows, cols, k, largest);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void index_add(DType dtype, void* out, const int64_t* index, const void* src, int64_t outer, int64_t out_dim,
               int64_t num_indices, int64_t inner, int64_t* error, void* stream) {
  launch_scatter("index_add", dtype, out, index, src, outer, out_dim, num_indices, inner, false, error, stream);
}

}  // namespace bam::cuda_kernels
