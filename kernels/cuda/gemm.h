// Dense matrix multiply on the GPU through cuBLASLt, with the row-major contract of
// kernels/cpu/gemm.h: C[M,N] = op(A) op(B) + beta * C for `batch` matrices at fixed strides.
// f32 (TF32 tensor cores when enabled), bf16 and f16 (f32 accumulation), f64. Asynchronous on
// `stream`; the algorithm for each shape is chosen once by cuBLASLt's heuristic and cached.
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

void gemm(DType dtype, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, float beta, void* C, int64_t ldc,
          int64_t stride_c, void* stream);

// C[M,N] = op(A) op(B) + bias[N] (every row), the bias added by cuBLASLt's epilogue: one pass
// over C instead of a broadcast copy before the product (what a Linear layer's forward needs).
// Returns false, computing nothing, when cuBLASLt offers no algorithm for this layout (and for
// f64, K = 0, or a bias pointer not 16-byte aligned): the caller then copies the bias into C and
// runs gemm with beta = 1.
bool gemm_bias(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
               const void* B, int64_t ldb, const void* bias, void* C, int64_t ldc, void* stream);

// C[M,N] = op(A) op(B), and bias_grad[M] = the row sums of op(A) (its sum over K), from cuBLASLt's
// BGRADB epilogue in the same pass: a Linear layer's weight gradient g^T x with its bias gradient,
// the column sums of g, without a separate reduction over g. Returns false, computing nothing,
// when cuBLASLt offers no algorithm for this layout (and for f64, K = 0, or a bias_grad pointer
// not 16-byte aligned): the caller then runs gemm and sums itself.
bool gemm_bias_grad(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                    int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc, void* bias_grad, void* stream);

// The layouts the two epilogue paths never take, before asking cuBLASLt: f64, K = 0, an empty
// output, and a bias (or bias gradient) pointer not 16-byte aligned. Shared with the emulator's
// stand-in (kernels/cuda/emulator/gemm.cpp), so that the engine's fallback runs there too.
inline bool gemm_epilogue_declined(DType dtype, int64_t M, int64_t N, int64_t K, const void* bias) {
  return K == 0 || M == 0 || N == 0 || dtype == DType::f64 || reinterpret_cast<uintptr_t>(bias) % 16 != 0;
}

// TF32 for f32 matmuls (off by default: f32 stays f32 unless the user opts in, as in PyTorch).
void gemm_allow_tf32(bool allow);

}  // namespace bam::cuda_kernels
