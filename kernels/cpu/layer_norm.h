// LayerNorm over the last dim of [rows, cols]: y = (x - mean) * rstd * weight + bias.
// (The f32 loops have AVX-512 twins, layer_norm_avx512.cpp, that give the same bits.)
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

// The f32 loops' kernel: "auto" (the AVX-512 twins on CPUs that have AVX-512, else the portable
// loops) or "portable". Returns false for another name. For the tests and benchmarks that compare
// them; not to be called while a LayerNorm runs.
bool layer_norm_force_kernel(const char* name);
// "avx512" or "portable": what the f32 LayerNorm runs now.
const char* layer_norm_kernel_name();

namespace layer_norm_detail {
// The AVX-512 twins of the f32 loops over rows [begin, end) (layer_norm_avx512.cpp); the backward
// one adds each row's dy * xhat and dy into partial_weight / partial_bias ([cols] doubles, both
// null when the parameters' gradients are not wanted).
void forward_rows_f32_avx512(const float* x, const float* weight, const float* bias, float* y, float* mean, float* rstd,
                             int64_t begin, int64_t end, int64_t cols, double eps);
void backward_rows_f32_avx512(const float* x, const float* weight, const float* mean, const float* rstd,
                              const float* dy, float* dx, double* partial_weight, double* partial_bias, int64_t begin,
                              int64_t end, int64_t cols);
}  // namespace layer_norm_detail

}  // namespace bam::cpu
