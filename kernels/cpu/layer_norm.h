// LayerNorm over the last dim of [rows, cols]: y = (x - mean) * rstd * weight + bias.
#pragma once

#include <cstdint>

namespace bam::cpu {

// weight and bias may be null (no affine). mean and rstd ([rows]) are saved for backward.
template <typename T>
void layer_norm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd, int64_t rows,
                        int64_t cols, double eps);

// dx (may be null) from dy; d_weight / d_bias (may be null) are overwritten with sums over rows.
template <typename T>
void layer_norm_backward(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy, T* dx,
                         T* d_weight, T* d_bias, int64_t rows, int64_t cols);

}  // namespace bam::cpu
