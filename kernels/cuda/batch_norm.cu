// BatchNorm on the GPU: one block per channel reduces over the N*L values of that channel
// (statistics in forward, sum(dy) and sum(dy * xhat) in backward); elementwise kernels apply.
#include "engine/cuda_check.h"
#include "kernels/cuda/batch_norm.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

template <typename S>
using Stat = typename Num<S>::Compute;

__device__ __forceinline__ int64_t channel_offset(int64_t k, int64_t c, int64_t C, int64_t L) {
  int64_t n = k / L, l = k % L;
  return (n * C + c) * L + l;
}

template <typename S>
__global__ void batch_norm_stats_kernel(const S* x, S* running_mean, S* running_var, bool training, double momentum,
                                        double eps, Stat<S>* mean_out, Stat<S>* rstd_out, int64_t N, int64_t C,
                                        int64_t L) {
  using N_ = Num<S>;
  using C_ = Stat<S>;
  const int64_t count = N * L;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    if (!training) {
      if (threadIdx.x == 0) {
        mean_out[c] = N_::load(running_mean[c]);
        rstd_out[c] = C_(1) / sqrt(C_(N_::load(running_var[c])) + C_(eps));
      }
      continue;
    }
    C_ s = 0;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) s += N_::load(x[channel_offset(k, c, C, L)]);
    C_ mean = block_all_reduce(s, SumOp{}, C_(0)) / C_(count);
    C_ ss = 0;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
      C_ d = N_::load(x[channel_offset(k, c, C, L)]) - mean;
      ss += d * d;
    }
    C_ var = block_all_reduce(ss, SumOp{}, C_(0)) / C_(count);  // biased, for normalising
    if (threadIdx.x == 0) {
      mean_out[c] = mean;
      rstd_out[c] = C_(1) / sqrt(var + C_(eps));
      if (running_mean && running_var) {
        C_ m = C_(momentum), unbiased = var * C_(count) / C_(count - 1);
        running_mean[c] = N_::store((C_(1) - m) * N_::load(running_mean[c]) + m * mean);
        running_var[c] = N_::store((C_(1) - m) * N_::load(running_var[c]) + m * unbiased);
      }
    }
  }
}

template <typename S>
__global__ void batch_norm_apply_kernel(const S* x, const Stat<S>* mean, const Stat<S>* rstd, const S* w, const S* b,
                                        S* y, int64_t total, int64_t C, int64_t L) {
  using N_ = Num<S>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = (t / L) % C;
    Stat<S> v = (N_::load(x[t]) - mean[c]) * rstd[c];
    if (w) v *= N_::load(w[c]);
    if (b) v += N_::load(b[c]);
    y[t] = N_::store(v);
  }
}

// sums[2c] = sum(dy), sums[2c+1] = sum(dy * xhat); d_bias and d_weight from them.
template <typename S>
__global__ void batch_norm_grad_sums_kernel(const S* x, const Stat<S>* mean, const Stat<S>* rstd, const S* dy,
                                            Stat<S>* sums, S* d_weight, S* d_bias, int64_t N, int64_t C, int64_t L) {
  using N_ = Num<S>;
  using C_ = Stat<S>;
  const int64_t count = N * L;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    C_ sg = 0, sgx = 0;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
      int64_t off = channel_offset(k, c, C, L);
      C_ g = N_::load(dy[off]);
      sg += g;
      sgx += g * (N_::load(x[off]) - mean[c]) * rstd[c];
    }
    sg = block_all_reduce(sg, SumOp{}, C_(0));
    sgx = block_all_reduce(sgx, SumOp{}, C_(0));
    if (threadIdx.x == 0) {
      sums[2 * c] = sg;
      sums[2 * c + 1] = sgx;
      if (d_bias) d_bias[c] = N_::store(sg);
      if (d_weight) d_weight[c] = N_::store(sgx);
    }
  }
}

template <typename S>
__global__ void batch_norm_dx_kernel(const S* x, const Stat<S>* mean, const Stat<S>* rstd, const S* w, const S* dy,
                                     const Stat<S>* sums, S* dx, int64_t total, int64_t C, int64_t L, int64_t count,
                                     bool batch_statistics) {
  using N_ = Num<S>;
  using C_ = Stat<S>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t c = (t / L) % C;
    C_ scale = rstd[c] * (w ? N_::load(w[c]) : C_(1));
    C_ g = N_::load(dy[t]);
    if (!batch_statistics) {
      dx[t] = N_::store(g * scale);
      continue;
    }
    C_ xhat = (N_::load(x[t]) - mean[c]) * rstd[c];
    dx[t] = N_::store(scale * (g - sums[2 * c] / C_(count) - xhat * sums[2 * c + 1] / C_(count)));
  }
}

}  // namespace

void batch_norm_forward(DType dtype, const void* x, const void* weight, const void* bias, void* running_mean,
                        void* running_var, bool training, double momentum, double eps, void* mean, void* rstd, void* y,
                        int64_t N, int64_t C, int64_t L, void* stream) {
  if (C == 0) return;
  dispatch_floating_storage("batch_norm", dtype, [&](auto tag) {
    using S = decltype(tag);
    batch_norm_stats_kernel<S><<<row_blocks(C), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(x), static_cast<S*>(running_mean), static_cast<S*>(running_var), training, momentum, eps,
        static_cast<Stat<S>*>(mean), static_cast<Stat<S>*>(rstd), N, C, L);
    int64_t total = N * C * L;
    if (total > 0)
      batch_norm_apply_kernel<S><<<grid_for(total), kBlock, 0, as_stream(stream)>>>(
          static_cast<const S*>(x), static_cast<const Stat<S>*>(mean), static_cast<const Stat<S>*>(rstd),
          static_cast<const S*>(weight), static_cast<const S*>(bias), static_cast<S*>(y), total, C, L);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void batch_norm_backward(DType dtype, const void* x, const void* mean, const void* rstd, const void* weight,
                         const void* dy, void* dx, void* d_weight, void* d_bias, int64_t N, int64_t C, int64_t L,
                         bool batch_statistics, void* scratch, void* stream) {
  if (C == 0) return;
  dispatch_floating_storage("batch_norm_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    auto* sums = static_cast<Stat<S>*>(scratch);
    batch_norm_grad_sums_kernel<S><<<row_blocks(C), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(x), static_cast<const Stat<S>*>(mean), static_cast<const Stat<S>*>(rstd),
        static_cast<const S*>(dy), sums, static_cast<S*>(d_weight), static_cast<S*>(d_bias), N, C, L);
    int64_t total = N * C * L;
    if (dx && total > 0)
      batch_norm_dx_kernel<S><<<grid_for(total), kBlock, 0, as_stream(stream)>>>(
          static_cast<const S*>(x), static_cast<const Stat<S>*>(mean), static_cast<const Stat<S>*>(rstd),
          static_cast<const S*>(weight), static_cast<const S*>(dy), sums, static_cast<S*>(dx), total, C, L, N * L,
          batch_statistics);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
