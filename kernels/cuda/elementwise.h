// CUDA twins of kernels/cpu/elementwise.h: unary maps and their derivatives, broadcasting binary
// ops, comparisons and where. Floating kernels take f32, f64, bf16 and f16 (16-bit types compute
// in f32); comparisons and where also take the integer types and bool. Asynchronous on `stream`.
#pragma once

#include <cstdint>

#include "engine/dtype.h"
#include "kernels/cpu/elementwise.h"

namespace bam::cuda_kernels {

void unary_forward(cpu::UnaryOp op, DType dtype, const void* x, void* y, int64_t n, cpu::UnaryArgs args, void* stream);
// x or y may be null when the derivative does not read it (see the CPU twin).
void unary_backward(cpu::UnaryOp op, DType dtype, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                    cpu::UnaryArgs args, void* stream);
void binary_forward(cpu::BinaryOp op, DType dtype, const void* a, const int64_t* a_strides, const void* b,
                    const int64_t* b_strides, void* out, const int64_t* shape, int ndim, void* stream);
// out = a + b over n contiguous elements, where b may have another floating dtype: computed in a's
// compute type, stored in a's dtype (the residual stream plus a 16-bit autocast branch).
void add_mixed(DType dtype, const void* a, DType b_dtype, const void* b, void* out, int64_t n, void* stream);
void compare(cpu::CompareOp op, DType dtype, const void* a, const int64_t* a_strides, const void* b,
             const int64_t* b_strides, bool* out, const int64_t* shape, int ndim, void* stream);
void where(const bool* cond, const int64_t* cond_strides, DType dtype, const void* a, const int64_t* a_strides,
           const void* b, const int64_t* b_strides, void* out, const int64_t* shape, int ndim, void* stream);

}  // namespace bam::cuda_kernels
