// Row kernels on the GPU: softmax / log-softmax, LayerNorm and L2 normalisation, forward and
// backward, one block per row (grid-stride over rows), sized to the row (row_threads). Statistics
// are block reductions in the compute type. LayerNorm's backward is one pass over x and dy: a
// grid of resident blocks walks the rows, writes dx, and sums each block's share of the column
// sums d_weight and d_bias in registers; reduce.cu's column pass then adds the blocks' partial rows.
// Rows wider than 2048 take two passes (dx, then the column sums in row chunks).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cuda/std/limits>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "engine/cuda_check.h"
#include "engine/host_device.h"
#include "kernels/cuda/numeric.cuh"
#include "kernels/cuda/reduce.h"
#include "kernels/cuda/rows.h"

namespace bam::cuda_kernels {
namespace {

// Threads per row: about four elements each, in whole warps, at most 256. Short rows (LayerNorm
// over 384 channels: 96 threads) then leave room for more rows in flight per SM, which is what
// hides memory latency in these few-bytes-per-thread kernels.
inline unsigned row_threads(int64_t cols) {
  int64_t warps = (cols + 127) / 128;
  return static_cast<unsigned>(32 * (warps < 1 ? 1 : warps > 8 ? 8 : warps));
}
constexpr int64_t kChunkRows = 256;  // rows per partial column sum in LayerNorm backward

template <typename S>
__global__ void softmax_forward_kernel(bool log_form, const S* x, S* y, int64_t rows, int64_t cols) {
  using N = Num<S>;
  using C = typename N::Compute;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* xr = x + r * cols;
    S* yr = y + r * cols;
    C m = -cuda::std::numeric_limits<C>::infinity();
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = max(m, N::load(xr[j]));
    m = block_all_reduce(m, MaxOp{}, -cuda::std::numeric_limits<C>::infinity());
    C s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += exp(N::load(xr[j]) - m);
    s = block_all_reduce(s, SumOp{}, C(0));
    if (log_form) {
      C log_s = log(s);
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = N::store(N::load(xr[j]) - m - log_s);
    } else {
      C inv = C(1) / s;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = N::store(exp(N::load(xr[j]) - m) * inv);
    }
  }
}

template <typename S>
__global__ void softmax_backward_kernel(bool log_form, const S* y, const S* dy, S* dx, int64_t rows, int64_t cols) {
  using N = Num<S>;
  using C = typename N::Compute;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* yr = y + r * cols;
    const S* gr = dy + r * cols;
    S* dr = dx + r * cols;
    C s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      s += log_form ? N::load(gr[j]) : N::load(gr[j]) * N::load(yr[j]);
    s = block_all_reduce(s, SumOp{}, C(0));
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      C yv = N::load(yr[j]), g = N::load(gr[j]);
      dr[j] = N::store(log_form ? g - exp(yv) * s : yv * (g - s));
    }
  }
}

// LayerNorm reads x and its parameters in S and writes y in O: O = S, or a 16-bit O after an f32
// S under autocast, so the normalised activations leave in the type the next Linear reads.
template <typename S, typename O>
__global__ void layer_norm_forward_kernel(const S* x, const S* w, const S* b, O* y, typename Num<S>::Compute* mean_out,
                                          typename Num<S>::Compute* rstd_out, int64_t rows, int64_t cols, double eps) {
  using N = Num<S>;
  using C = typename N::Compute;
  using NO = Num<O>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* xr = x + r * cols;
    C s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += N::load(xr[j]);
    C mean = block_all_reduce(s, SumOp{}, C(0)) / C(cols);
    C ss = 0;  // two passes: the variance of centred values does not cancel
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      C d = N::load(xr[j]) - mean;
      ss += d * d;
    }
    C var = block_all_reduce(ss, SumOp{}, C(0)) / C(cols);
    C rstd = C(1) / sqrt(var + C(eps));
    if (threadIdx.x == 0) {
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      C v = (N::load(xr[j]) - mean) * rstd;
      if (w) v *= N::load(w[j]);
      if (b) v += N::load(b[j]);
      y[r * cols + j] = NO::store(static_cast<typename NO::Compute>(v));
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight; dy in the output type O.
template <typename S, typename O>
__global__ void layer_norm_dx_kernel(const S* x, const S* w, const typename Num<S>::Compute* mean,
                                     const typename Num<S>::Compute* rstd, const O* dy, S* dx, int64_t rows,
                                     int64_t cols) {
  using N = Num<S>;
  using C = typename N::Compute;
  auto load_dy = [](O v) { return C(Num<O>::load(v)); };
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* xr = x + r * cols;
    const O* gr = dy + r * cols;
    C m = mean[r], rs = rstd[r];
    C sum_g = 0, sum_gx = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      C g = load_dy(gr[j]) * (w ? N::load(w[j]) : C(1));
      sum_g += g;
      sum_gx += g * (N::load(xr[j]) - m) * rs;
    }
    sum_g = block_all_reduce(sum_g, SumOp{}, C(0));
    sum_gx = block_all_reduce(sum_gx, SumOp{}, C(0));
    C mean_g = sum_g / C(cols), mean_gx = sum_gx / C(cols);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      C g = load_dy(gr[j]) * (w ? N::load(w[j]) : C(1));
      C xhat = (N::load(xr[j]) - m) * rs;
      dx[r * cols + j] = N::store(rs * (g - mean_g - xhat * mean_gx));
    }
  }
}

// The one-pass backward. Thread t of a block owns the columns t + k * blockDim.x (k < PER_THREAD)
// of every row its block visits, so it keeps the row's g and xhat in registers between the two
// reductions (x and dy are read once), and it adds its columns' d_weight terms (dy * xhat) and
// d_bias terms (dy) across all those rows. At the end the block writes them as its partial row.
template <typename S, typename O, int PER_THREAD>
__global__ void layer_norm_backward_one_pass_kernel(const S* x, const S* w, const typename Num<S>::Compute* mean,
                                                    const typename Num<S>::Compute* rstd, const O* dy, S* dx,
                                                    typename Num<S>::Compute* partial_w,
                                                    typename Num<S>::Compute* partial_b, int64_t rows, int64_t cols) {
  using N = Num<S>;
  using C = typename N::Compute;
  C sum_dy_xhat[PER_THREAD], sum_dy[PER_THREAD];
  BAM_UNROLL
  for (int k = 0; k < PER_THREAD; ++k) sum_dy_xhat[k] = sum_dy[k] = C(0);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* xr = x + r * cols;
    const O* gr = dy + r * cols;
    const C m = mean[r], rs = rstd[r];
    C g[PER_THREAD], xhat[PER_THREAD];
    C sum_g = 0, sum_gx = 0;
    BAM_UNROLL
    for (int k = 0; k < PER_THREAD; ++k) {
      const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
      g[k] = xhat[k] = C(0);
      if (j < cols) {
        const C d = C(Num<O>::load(gr[j]));
        xhat[k] = (N::load(xr[j]) - m) * rs;
        sum_dy_xhat[k] += d * xhat[k];
        sum_dy[k] += d;
        g[k] = w ? d * N::load(w[j]) : d;
        sum_g += g[k];
        sum_gx += g[k] * xhat[k];
      }
    }
    sum_g = block_all_reduce(sum_g, SumOp{}, C(0));
    sum_gx = block_all_reduce(sum_gx, SumOp{}, C(0));
    const C mean_g = sum_g / C(cols), mean_gx = sum_gx / C(cols);
    if (dx) {
      BAM_UNROLL
      for (int k = 0; k < PER_THREAD; ++k) {
        const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
        if (j < cols) dx[r * cols + j] = N::store(rs * (g[k] - mean_g - xhat[k] * mean_gx));
      }
    }
  }
  BAM_UNROLL
  for (int k = 0; k < PER_THREAD; ++k) {
    const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
    if (j < cols) {
      partial_w[blockIdx.x * cols + j] = sum_dy_xhat[k];
      partial_b[blockIdx.x * cols + j] = sum_dy[k];
    }
  }
}

// partial[chunk][c] sums over the chunk's rows: dy * xhat (d_weight) and dy (d_bias).
template <typename S, typename O>
__global__ void layer_norm_partial_kernel(const S* x, const typename Num<S>::Compute* mean,
                                          const typename Num<S>::Compute* rstd, const O* dy,
                                          typename Num<S>::Compute* partial_w, typename Num<S>::Compute* partial_b,
                                          int64_t rows, int64_t cols) {
  using N = Num<S>;
  using C = typename N::Compute;
  // Chunks on x, whose grid reaches 2^31 - 1 (y and z stop at 65535); columns on y, strided.
  const int64_t chunk = blockIdx.x;
  for (int64_t c = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.y) * blockDim.x) {
    C sw = 0, sb = 0;
    int64_t end = (chunk + 1) * kChunkRows < rows ? (chunk + 1) * kChunkRows : rows;
    for (int64_t r = chunk * kChunkRows; r < end; ++r) {
      C g = C(Num<O>::load(dy[r * cols + c]));
      sw += g * (N::load(x[r * cols + c]) - mean[r]) * rstd[r];
      sb += g;
    }
    partial_w[chunk * cols + c] = sw;
    partial_b[chunk * cols + c] = sb;
  }
}

template <typename S>
__global__ void l2_normalize_forward_kernel(const S* x, S* y, typename Num<S>::Compute* norms, int64_t rows,
                                            int64_t cols, double eps) {
  using N = Num<S>;
  using C = typename N::Compute;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* xr = x + r * cols;
    C ss = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      C v = N::load(xr[j]);
      ss += v * v;
    }
    C norm = sqrt(block_all_reduce(ss, SumOp{}, C(0)));
    if (threadIdx.x == 0) norms[r] = norm;
    // The CPU's comparison (and the backward's): a NaN norm gives NaN, where max() would take eps.
    C inv = C(1) / (norm <= C(eps) ? C(eps) : norm);
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[r * cols + j] = N::store(N::load(xr[j]) * inv);
  }
}

template <typename S>
__global__ void l2_normalize_backward_kernel(const S* y, const typename Num<S>::Compute* norms, const S* dy, S* dx,
                                             int64_t rows, int64_t cols, double eps) {
  using N = Num<S>;
  using C = typename N::Compute;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const S* yr = y + r * cols;
    const S* gr = dy + r * cols;
    S* dr = dx + r * cols;
    C norm = norms[r];
    if (norm <= C(eps)) {  // the divisor was the constant eps (uniform across the block)
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dr[j] = N::store(N::load(gr[j]) / C(eps));
      continue;
    }
    C dot = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dot += N::load(gr[j]) * N::load(yr[j]);
    dot = block_all_reduce(dot, SumOp{}, C(0));
    C inv = C(1) / norm;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      dr[j] = N::store((N::load(gr[j]) - N::load(yr[j]) * dot) * inv);
  }
}

template <typename S>
using Stat = typename Num<S>::Compute;

// Calls fn(S{}, O{}) for LayerNorm's input and output types: equal, or f32 in and 16 bits out.
template <typename Fn>
void dispatch_norm_types(const char* kernel, DType dtype, DType out_dtype, Fn&& fn) {
  if (dtype == out_dtype) {
    dispatch_floating_storage(kernel, dtype, [&](auto tag) { fn(tag, tag); });
    return;
  }
  BAM_CHECK(dtype == DType::f32 && (out_dtype == DType::bf16 || out_dtype == DType::f16),
            "{} (CUDA): input {} with output {} is not supported (a different output type needs f32 in, 16 bits out)",
            kernel, dtype_name(dtype), dtype_name(out_dtype));
  if (out_dtype == DType::bf16)
    fn(float{}, __nv_bfloat16{});
  else
    fn(float{}, __half{});
}

// Columns per thread of the one-pass LayerNorm backward (4 or 8), or 0 for rows too wide for it.
int one_pass_columns(int64_t cols) {
  const int64_t threads = row_threads(cols), per_thread = (cols + threads - 1) / threads;
  return per_thread <= 4 ? 4 : per_thread <= 8 ? 8 : 0;
}

// Blocks of the one-pass backward: as many as the device holds at once, at most one per row. Each
// block then walks many rows, and the partial rows the column pass adds stay few (about 1,800 on
// an H200 at 384 columns). Without a kernel this is the bound from the SM's thread and block
// limits (the scratch size); with one, its registers may allow fewer (the launch). The device's
// limits and each kernel's occupancy are looked up once per device.
int64_t one_pass_blocks(int64_t rows, int64_t cols, const void* kernel = nullptr) {
  struct Limits {
    int sms = 0, threads_per_sm = 0, blocks_per_sm = 0;
  };
  static std::mutex mutex;
  static std::map<int, Limits> device_limits;
  static std::map<std::tuple<int, const void*, int>, int> resident_blocks;
  int device = 0;
  BAM_CUDA_CHECK(cudaGetDevice(&device));
  const int threads = static_cast<int>(row_threads(cols));
  std::lock_guard<std::mutex> lock(mutex);
  auto found = device_limits.find(device);
  if (found == device_limits.end()) {
    Limits l;
    BAM_CUDA_CHECK(cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, device));
    BAM_CUDA_CHECK(cudaDeviceGetAttribute(&l.threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
    BAM_CUDA_CHECK(cudaDeviceGetAttribute(&l.blocks_per_sm, cudaDevAttrMaxBlocksPerMultiprocessor, device));
    found = device_limits.emplace(device, l).first;
  }
  const Limits& l = found->second;
  int64_t per_sm = std::min(l.blocks_per_sm, l.threads_per_sm / threads);
  if (kernel) {
    auto key = std::make_tuple(device, kernel, threads);
    auto it = resident_blocks.find(key);
    if (it == resident_blocks.end()) {
      int resident = 0;
      BAM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, threads, 0));
      // 0 would mean the kernel cannot run at this block size at all (registers or shared memory):
      // say so here rather than let the launch fail with a generic error.
      BAM_CHECK(resident > 0, "layer_norm backward (CUDA): no block of {} threads fits on an SM of device {}",
                threads, device);
      it = resident_blocks.emplace(key, resident).first;
    }
    per_sm = std::min<int64_t>(per_sm, it->second);
  }
  return std::max<int64_t>(1, std::min<int64_t>(rows, int64_t(l.sms) * std::max<int64_t>(per_sm, 1)));
}

// BAM_LAYER_NORM_BACKWARD=two_pass: the two-kernel backward at every width, so that the benchmark
// and the GPU test can set the one pass beside it (read at every call, as BAM_ATTENTION).
bool layer_norm_two_pass_requested() {
  const char* choice = std::getenv("BAM_LAYER_NORM_BACKWARD");
  return choice != nullptr && std::strcmp(choice, "two_pass") == 0;
}

}  // namespace

void softmax_forward(bool log_form, DType dtype, const void* x, void* y, int64_t rows, int64_t cols, void* stream) {
  if (rows * cols == 0) return;
  dispatch_floating_storage("softmax", dtype, [&](auto tag) {
    using S = decltype(tag);
    softmax_forward_kernel<S><<<row_blocks(rows), row_threads(cols), 0, as_stream(stream)>>>(log_form, static_cast<const S*>(x),
                                                                                     static_cast<S*>(y), rows, cols);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void softmax_backward(bool log_form, DType dtype, const void* y, const void* dy, void* dx, int64_t rows, int64_t cols,
                      void* stream) {
  if (rows * cols == 0) return;
  dispatch_floating_storage("softmax_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    softmax_backward_kernel<S><<<row_blocks(rows), row_threads(cols), 0, as_stream(stream)>>>(
        log_form, static_cast<const S*>(y), static_cast<const S*>(dy), static_cast<S*>(dx), rows, cols);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void layer_norm_forward(DType dtype, DType out_dtype, const void* x, const void* weight, const void* bias, void* y,
                        void* mean, void* rstd, int64_t rows, int64_t cols, double eps, void* stream) {
  if (rows * cols == 0) return;
  dispatch_norm_types("layer_norm", dtype, out_dtype, [&](auto in_tag, auto out_tag) {
    using S = decltype(in_tag);
    using O = decltype(out_tag);
    layer_norm_forward_kernel<S, O><<<row_blocks(rows), row_threads(cols), 0, as_stream(stream)>>>(
        static_cast<const S*>(x), static_cast<const S*>(weight), static_cast<const S*>(bias), static_cast<O*>(y),
        static_cast<Stat<S>*>(mean), static_cast<Stat<S>*>(rstd), rows, cols, eps);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

size_t layer_norm_backward_scratch_bytes(DType dtype, int64_t rows, int64_t cols) {
  // Room for whichever design runs: the one pass's blocks or the two-kernel path's row chunks
  // (BAM_LAYER_NORM_BACKWARD may change between this call and the backward).
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const int64_t parts = std::max(chunks, one_pass_columns(cols) ? one_pass_blocks(rows, cols) : int64_t{0});
  const size_t stat = dtype == DType::f64 ? sizeof(double) : sizeof(float);
  return size_t(2 * parts * cols) * stat;
}

void layer_norm_backward(DType dtype, DType dy_dtype, const void* x, const void* weight, const void* mean,
                         const void* rstd, const void* dy, void* dx, void* d_weight, void* d_bias, int64_t rows,
                         int64_t cols, void* scratch, void* stream) {
  if (cols == 0) return;
  if (rows == 0) {  // no rows: the column sums are empty sums (all-zero bits are 0 in every float type)
    const size_t bytes = size_t(cols) * dtype_size(dtype);
    if (d_weight) BAM_CUDA_CHECK(cudaMemsetAsync(d_weight, 0, bytes, as_stream(stream)));
    if (d_bias) BAM_CUDA_CHECK(cudaMemsetAsync(d_bias, 0, bytes, as_stream(stream)));
    return;
  }
  dispatch_norm_types("layer_norm_backward", dtype, dy_dtype, [&](auto in_tag, auto out_tag) {
    using S = decltype(in_tag);
    using O = decltype(out_tag);
    using C = Stat<S>;
    const S* xs = static_cast<const S*>(x);
    const S* ws = static_cast<const S*>(weight);
    const C* m = static_cast<const C*>(mean);
    const C* rs = static_cast<const C*>(rstd);
    const O* g = static_cast<const O*>(dy);
    S* dxs = static_cast<S*>(dx);
    const unsigned threads = row_threads(cols);
    // d_weight and d_bias: the column sums of the partial rows (reduce.cu's column pass).
    auto finish = [&](int64_t parts, const C* partial_w, const C* partial_b) {
      static_assert(std::is_same_v<C, float> || std::is_same_v<C, double>);
      const DType partial_dtype = std::is_same_v<C, double> ? DType::f64 : DType::f32;
      if (d_weight) column_sums(partial_dtype, dtype, partial_w, d_weight, parts, cols, stream);
      if (d_bias) column_sums(partial_dtype, dtype, partial_b, d_bias, parts, cols, stream);
    };
    if (!d_weight && !d_bias) {  // dx alone
      if (dxs)
        layer_norm_dx_kernel<S, O><<<row_blocks(rows), threads, 0, as_stream(stream)>>>(xs, ws, m, rs, g, dxs, rows, cols);
      return;
    }
    if (const int per_thread = one_pass_columns(cols); per_thread && !layer_norm_two_pass_requested()) {
      auto kernel = per_thread == 4 ? layer_norm_backward_one_pass_kernel<S, O, 4>
                                    : layer_norm_backward_one_pass_kernel<S, O, 8>;
      const int64_t blocks = one_pass_blocks(rows, cols, reinterpret_cast<const void*>(kernel));
      C* partial_w = static_cast<C*>(scratch);  // room for one_pass_blocks(rows, cols) >= blocks
      C* partial_b = partial_w + blocks * cols;
      kernel<<<unsigned(blocks), threads, 0, as_stream(stream)>>>(xs, ws, m, rs, g, dxs, partial_w, partial_b, rows,
                                                                  cols);
      finish(blocks, partial_w, partial_b);
      return;
    }
    // Wider rows: dx, then the column sums over chunks of kChunkRows rows.
    if (dxs)
      layer_norm_dx_kernel<S, O><<<row_blocks(rows), threads, 0, as_stream(stream)>>>(xs, ws, m, rs, g, dxs, rows, cols);
    const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;  // < 2^31 for any rows * cols that fit
    C* partial_w = static_cast<C*>(scratch);
    C* partial_b = partial_w + chunks * cols;
    const unsigned column_blocks = static_cast<unsigned>(std::min<int64_t>((cols + kBlock - 1) / kBlock, 65535));
    layer_norm_partial_kernel<S, O><<<dim3(unsigned(chunks), column_blocks), kBlock, 0, as_stream(stream)>>>(
        xs, m, rs, g, partial_w, partial_b, rows, cols);
    finish(chunks, partial_w, partial_b);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void l2_normalize_forward(DType dtype, const void* x, void* y, void* norms, int64_t rows, int64_t cols, double eps,
                          void* stream) {
  if (rows * cols == 0) return;
  dispatch_floating_storage("l2_normalize", dtype, [&](auto tag) {
    using S = decltype(tag);
    l2_normalize_forward_kernel<S><<<row_blocks(rows), row_threads(cols), 0, as_stream(stream)>>>(
        static_cast<const S*>(x), static_cast<S*>(y), static_cast<Stat<S>*>(norms), rows, cols, eps);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void l2_normalize_backward(DType dtype, const void* y, const void* norms, const void* dy, void* dx, int64_t rows,
                           int64_t cols, double eps, void* stream) {
  if (rows * cols == 0) return;
  dispatch_floating_storage("l2_normalize_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    l2_normalize_backward_kernel<S><<<row_blocks(rows), row_threads(cols), 0, as_stream(stream)>>>(
        static_cast<const S*>(y), static_cast<const Stat<S>*>(norms), static_cast<const S*>(dy), static_cast<S*>(dx),
        rows, cols, eps);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
