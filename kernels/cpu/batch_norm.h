// BatchNorm over [N, C, L] (L = 1 for [N, C]): per-channel statistics over N and L.
#pragma once

#include <cstdint>

namespace bam::cpu {

// Per-channel mean and biased variance of x over N and L.
template <typename T>
void batch_norm_stats(const T* x, T* mean, T* var, int64_t N, int64_t C, int64_t L);

// y = (x - mean[c]) * rstd[c] * weight[c] + bias[c]; weight/bias may be null.
template <typename T>
void batch_norm_apply(const T* x, const T* mean, const T* rstd, const T* weight, const T* bias, T* y, int64_t N,
                      int64_t C, int64_t L);

// Gradients. `batch_statistics` says mean/rstd came from this batch (training), so the
// normalisation itself depends on x; otherwise they were constants (eval). dx, d_weight,
// d_bias may each be null.
template <typename T>
void batch_norm_backward(const T* x, const T* mean, const T* rstd, const T* weight, const T* dy, T* dx,
                         T* d_weight, T* d_bias, int64_t N, int64_t C, int64_t L, bool batch_statistics);

}  // namespace bam::cpu
