// CUDA twin of kernels/cpu/batch_norm.h: BatchNorm over [N, C, L] (L = 1 for [N, C]) with
// per-channel statistics over N and L. mean and rstd ([C]) are in the compute type (f64 for f64,
// else f32); running statistics, weight and bias are in the tensor's dtype.
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

// training: statistics of this batch (running_mean/var, if non-null, move by `momentum`, the
// variance unbiased); otherwise mean and rstd come from the running statistics. Then
// y = (x - mean) * rstd * weight + bias (weight, bias may be null).
void batch_norm_forward(DType dtype, const void* x, const void* weight, const void* bias, void* running_mean,
                        void* running_var, bool training, double momentum, double eps, void* mean, void* rstd, void* y,
                        int64_t N, int64_t C, int64_t L, void* stream);

// dx, d_weight, d_bias may each be null. scratch: 2*C values of the compute type.
void batch_norm_backward(DType dtype, const void* x, const void* mean, const void* rstd, const void* weight,
                         const void* dy, void* dx, void* d_weight, void* d_bias, int64_t N, int64_t C, int64_t L,
                         bool batch_statistics, void* scratch, void* stream);

}  // namespace bam::cuda_kernels
