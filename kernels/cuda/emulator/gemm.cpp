// The CUDA emulator's stand-in for cuBLASLt (kernels/cuda/gemm.cu): the same entry points
// (kernels/cuda/gemm.h), computed by the CPU GEMM in f32 (f64 for f64) and rounded once to the
// output type, as cuBLASLt's f32 accumulation does; f32 operands are rounded to TF32 when it is
// on. It tests what the engine does around the library (strides, transposes, batching, the fused
// bias and bias-gradient paths), not cuBLASLt. Conversions are the CPU kernels' (cpu::convert).
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/copy.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/emulator/emulator_state.h"
#include "kernels/cuda/gemm.h"

namespace bam::cuda_kernels {
namespace {

bool g_allow_tf32 = false;

// f32 rounded to TF32's 10 mantissa bits (to nearest, ties away from zero, as the tensor cores'
// conversion does); infinities and NaN pass through.
float to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;
  std::memcpy(&v, &bits, 4);
  return v;
}

const char* element(DType dtype, const void* base, int64_t offset) {
  return static_cast<const char*>(base) + offset * static_cast<int64_t>(dtype_size(dtype));
}

// A rows x cols matrix (row stride ld) as dense f32.
std::vector<float> dense(DType dtype, const void* p, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    cpu::convert(element(dtype, p, r * ld), dtype, out.data() + r * cols, DType::f32, cols);
  return out;
}

// An operand as the tensor cores read it: f32 operands in TF32 when it is allowed.
std::vector<float> operand(DType dtype, const void* p, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out = dense(dtype, p, rows, cols, ld);
  if (dtype == DType::f32 && g_allow_tf32)
    for (float& v : out) v = to_tf32(v);
  return out;
}

// One product in f32: C = op(A) op(B) + beta C (+ bias per column), and the row sums of op(A).
void multiply(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
              const void* B, int64_t ldb, float beta, const void* bias, void* C, int64_t ldc, void* bias_grad) {
  std::vector<float> a = operand(dtype, A, trans_a ? K : M, trans_a ? M : K, lda);
  std::vector<float> b = operand(dtype, B, trans_b ? N : K, trans_b ? K : N, ldb);
  std::vector<float> c(static_cast<size_t>(M * N), 0.0f);
  if (beta != 0.0f) c = dense(dtype, C, M, N, ldc);
  cpu::gemm_f32(trans_a, trans_b, M, N, K, 1.0f, a.data(), trans_a ? M : K, b.data(), trans_b ? K : N, beta, c.data(),
                N);
  if (bias) {
    const std::vector<float> row = dense(dtype, bias, 1, N, N);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t col = 0; col < N; ++col) c[r * N + col] += row[col];
  }
  for (int64_t r = 0; r < M; ++r)
    cpu::convert(c.data() + r * N, DType::f32, const_cast<char*>(element(dtype, C, r * ldc)), dtype, N);
  if (bias_grad) {
    std::vector<float> sums(static_cast<size_t>(M), 0.0f);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t k = 0; k < K; ++k) sums[r] += trans_a ? a[k * M + r] : a[r * K + k];
    cpu::convert(sums.data(), DType::f32, bias_grad, dtype, M);
  }
}

}  // namespace

void gemm(DType dtype, bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, const void* A,
          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, float beta, void* C, int64_t ldc,
          int64_t stride_c, void*) {
  emu::complete_held_copies();
  if (dtype == DType::f64) {
    cpu::gemm_batched_f64(trans_a, trans_b, batch, M, N, K, 1.0, static_cast<const double*>(A), lda, stride_a,
                          static_cast<const double*>(B), ldb, stride_b, beta, static_cast<double*>(C), ldc, stride_c);
    return;
  }
  for (int64_t i = 0; i < batch; ++i)
    multiply(dtype, trans_a, trans_b, M, N, K, element(dtype, A, i * stride_a), lda, element(dtype, B, i * stride_b),
             ldb, beta, nullptr, const_cast<char*>(element(dtype, C, i * stride_c)), ldc, nullptr);
}

bool gemm_bias(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
               const void* B, int64_t ldb, const void* bias, void* C, int64_t ldc, void*) {
  if (gemm_epilogue_declined(dtype, M, N, K, bias)) return false;
  emu::complete_held_copies();
  multiply(dtype, trans_a, trans_b, M, N, K, A, lda, B, ldb, 0.0f, bias, C, ldc, nullptr);
  return true;
}

bool gemm_bias_grad(DType dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A,
                    int64_t lda, const void* B, int64_t ldb, void* C, int64_t ldc, void* bias_grad, void*) {
  if (gemm_epilogue_declined(dtype, M, N, K, bias_grad)) return false;
  emu::complete_held_copies();
  multiply(dtype, trans_a, trans_b, M, N, K, A, lda, B, ldb, 0.0f, nullptr, C, ldc, bias_grad);
  return true;
}

void gemm_allow_tf32(bool allow) { g_allow_tf32 = allow; }

}  // namespace bam::cuda_kernels
