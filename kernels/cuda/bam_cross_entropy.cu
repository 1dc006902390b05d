// The BAM cross-entropy on the GPU: one block per row (view s, image b) of the similarities, the
// same steps as the CPU specification (kernels/cpu/bam_cross_entropy.cpp): the masked row maximum
// and log-sum-exp of S/tau, the other target views' rows summed into W, then the row's loss and
// its gradient. Per-row losses go to a buffer that the op sums, so the total is deterministic.
#include <cuda/std/limits>

#include "engine/cuda_check.h"
#include "kernels/cuda/bam_cross_entropy.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

template <typename T>
__global__ void bam_cross_entropy_kernel(const T* s, const T* p, T* row_loss, T* d_s, int64_t V, int64_t G, int64_t B,
                                         int64_t C, int64_t CB, int64_t first, T inv_tau, T scale,
                                         bool positive_masking) {
  for (int64_t i = blockIdx.x; i < V * B; i += gridDim.x) {
    const int64_t view = i / B, b = i % B;
    const T* row = s + i * C;
    auto masked = [&](int64_t j) { return positive_masking && j % CB == first + b; };
    T m = -cuda::std::numeric_limits<T>::infinity();
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
      if (!masked(j)) m = max(m, row[j] * inv_tau);
    m = block_all_reduce(m, MaxOp{}, -cuda::std::numeric_limits<T>::infinity());
    T sum_exp = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
      if (!masked(j)) sum_exp += exp(row[j] * inv_tau - m);
    const T lse = m + log(block_all_reduce(sum_exp, SumOp{}, T(0)));
    // W_j for this thread's columns is recomputed in the gradient pass rather than stored: G is 2
    // in the recipes, so two extra reads of P's rows cost less than a row of scratch.
    auto w_at = [&](int64_t j) {
      T w = 0;
      for (int64_t t = 0; t < G; ++t)
        if (!(V > 1 && t == view)) w += p[(t * B + b) * C + j];
      return w;
    };
    T loss = 0, sum_w = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
      if (!masked(j)) {
        const T w = w_at(j);
        loss += w * (row[j] * inv_tau - lse);
        sum_w += w;
      }
    loss = block_all_reduce(loss, SumOp{}, T(0));
    sum_w = block_all_reduce(sum_w, SumOp{}, T(0));
    if (threadIdx.x == 0) row_loss[i] = -scale * loss;
    if (!d_s) continue;
    T* grad = d_s + i * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
      grad[j] = masked(j) ? T(0) : -scale * (w_at(j) - exp(row[j] * inv_tau - lse) * sum_w) * inv_tau;
  }
}

}  // namespace

void bam_cross_entropy(DType dtype, const void* s, const void* p, void* row_loss, void* d_s,
                       const cpu::BamCrossEntropyShape& shape, void* stream) {
  const int64_t V = shape.views, G = shape.globals, B = shape.batch, C = shape.columns;
  if (V * B == 0) return;
  const int64_t CB = shape.column_batch > 0 ? shape.column_batch : B;
  const double scale = 1.0 / (double(G) * double(V > 1 ? V - 1 : 1) * double(CB));
  const unsigned threads = C >= 512 ? 256 : C >= 128 ? 128 : 32;
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    bam_cross_entropy_kernel<T><<<row_blocks(V * B), threads, 0, as_stream(stream)>>>(
        static_cast<const T*>(s), static_cast<const T*>(p), static_cast<T*>(row_loss), static_cast<T*>(d_s), V, G, B, C,
        CB, shape.first_image, T(1.0 / shape.temperature), T(scale), shape.positive_masking);
  };
  dispatch_wide_storage("bam_cross_entropy", dtype, launch);
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
