// CUDA twins of the row kernels of kernels/cpu (softmax.h, layer_norm.h, l2_normalize.h): one
// thread block per row of a contiguous [rows, cols] layout. Inputs and outputs are in `dtype`
// (f32, f64, bf16, f16); saved statistics (mean, rstd, norms) are in the compute type: f64 for
// f64, f32 otherwise, so 16-bit activations keep exact statistics for backward.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

void softmax_forward(bool log_form, DType dtype, const void* x, void* y, int64_t rows, int64_t cols, void* stream);
// softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy).
void softmax_backward(bool log_form, DType dtype, const void* y, const void* dy, void* dx, int64_t rows, int64_t cols,
                      void* stream);

// x, weight, bias in dtype; y in out_dtype, which is dtype or, for an f32 input, bf16/f16 (the
// normalised activations in the autocast compute type). weight and bias may be null. mean and
// rstd: [rows] in the compute type.
void layer_norm_forward(DType dtype, DType out_dtype, const void* x, const void* weight, const void* bias, void* y,
                        void* mean, void* rstd, int64_t rows, int64_t cols, double eps, void* stream);
// Scratch the backward needs for the column sums of d_weight and d_bias.
size_t layer_norm_backward_scratch_bytes(DType dtype, int64_t rows, int64_t cols);
// dy in dy_dtype (the forward's out_dtype); dx, d_weight, d_bias in dtype and may each be null;
// weight may be null (no affine). One pass over x and dy up to 2048 columns, two kernels above
// (or everywhere with BAM_LAYER_NORM_BACKWARD=two_pass, for comparison).
void layer_norm_backward(DType dtype, DType dy_dtype, const void* x, const void* weight, const void* mean,
                         const void* rstd, const void* dy, void* dx, void* d_weight, void* d_bias, int64_t rows,
                         int64_t cols, void* scratch, void* stream);

// y = x / max(||x||, eps); norms ([rows], compute type) = ||x||.
void l2_normalize_forward(DType dtype, const void* x, void* y, void* norms, int64_t rows, int64_t cols, double eps,
                          void* stream);
void l2_normalize_backward(DType dtype, const void* y, const void* norms, const void* dy, void* dx, int64_t rows,
                           int64_t cols, double eps, void* stream);

}  // namespace bam::cuda_kernels
