// AVX-512 pieces of the f32 GEMM: the 12x32 micro-kernel and the packing routines that feed it.
// Compiled with -mavx512f -mfma; gemm.cpp only calls in here after checking the CPU at run time.
// The same design as gemm_avx2.cpp with registers twice as wide and twice as many of them: where
// a core has two 512-bit FMA units, a k step does four times the AVX2 tile's multiply-adds.
#include <cstdint>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_x86_pack.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gemm_detail {
namespace {

// The tile: 12 rows x 32 columns (see multiply_tile_fixed).
constexpr int kRows = 12;
constexpr int kCols = 32;

// Accumulates a ROWS x (16 * HALVES) tile over kc steps, then writes its top-left rows x cols
// corner (cols > 16 * (HALVES - 1)): c = alpha * acc + beta * c, c not read when beta == 0.
// <12, 2> is the main kernel: 24 accumulators + 2 B vectors + 1 broadcast A value = 27 of the 32
// zmm registers, and 24 independent FMAs per k step (2 vector loads, 12 broadcasts) keep both FMA
// units busy. Smaller instances serve the edges of C. The constant loops must be unrolled
// (pragmas) so that the accumulators live in registers.
template <int ROWS, int HALVES>
void multiply_tile_fixed(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                         int cols) {
#pragma GCC unroll 12
  for (int r = 0; r < ROWS; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * HALVES - 1), _MM_HINT_T0);
  }
  __m512 acc[ROWS][HALVES];
#pragma GCC unroll 12
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
    for (int h = 0; h < HALVES; ++h) acc[r][h] = _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b_half[HALVES];
#pragma GCC unroll 2
    for (int h = 0; h < HALVES; ++h) b_half[h] = _mm512_load_ps(b + 16 * h);
#pragma GCC unroll 12
    for (int r = 0; r < ROWS; ++r) {
      const __m512 a_value = _mm512_set1_ps(a[r]);
#pragma GCC unroll 2
      for (int h = 0; h < HALVES; ++h) acc[r][h] = _mm512_fmadd_ps(a_value, b_half[h], acc[r][h]);
    }
    a += kRows;
    b += kCols;
  }
  const __m512 valpha = _mm512_set1_ps(alpha);
  const __m512 vbeta = _mm512_set1_ps(beta);
  const __mmask16 last_mask = first_lanes16(cols - 16 * (HALVES - 1));  // the last half's lanes inside C
#pragma GCC unroll 12
  for (int r = 0; r < ROWS; ++r) {
    float* c_row = c + r * ldc;
#pragma GCC unroll 2
    for (int h = 0; h < HALVES; ++h) {
      const __mmask16 mask = h < HALVES - 1 ? __mmask16(0xFFFF) : last_mask;
      __m512 value = _mm512_mul_ps(acc[r][h], valpha);
      if (beta != 0.0f) value = _mm512_fmadd_ps(vbeta, load16(c_row + 16 * h, mask), value);
      // Masked even when every lane is written (not store16), as in the bf16 kernel
      // (gemm_bf16_dot_avx512bf16.cpp), where C's plain stores measured slower on Zen 5; here
      // both measured the same (the README model's fc1 forward in f32: 3.5 ms either way).
      _mm512_mask_storeu_ps(c_row + 16 * h, mask, value);
    }
  }
}

template <int ROWS>
void multiply_tile_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                        int cols) {
  if (cols > 16) {
    multiply_tile_fixed<ROWS, 2>(kc, a, b, c, ldc, alpha, beta, cols);
  } else {
    multiply_tile_fixed<ROWS, 1>(kc, a, b, c, ldc, alpha, beta, cols);
  }
}

void multiply_tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int rows,
                   int cols) {
  switch (rows) {
    case 12: return multiply_tile_rows<12>(kc, a, b, c, ldc, alpha, beta, cols);
    case 11: return multiply_tile_rows<11>(kc, a, b, c, ldc, alpha, beta, cols);
    case 10: return multiply_tile_rows<10>(kc, a, b, c, ldc, alpha, beta, cols);
    case 9: return multiply_tile_rows<9>(kc, a, b, c, ldc, alpha, beta, cols);
    case 8: return multiply_tile_rows<8>(kc, a, b, c, ldc, alpha, beta, cols);
    case 7: return multiply_tile_rows<7>(kc, a, b, c, ldc, alpha, beta, cols);
    case 6: return multiply_tile_rows<6>(kc, a, b, c, ldc, alpha, beta, cols);
    case 5: return multiply_tile_rows<5>(kc, a, b, c, ldc, alpha, beta, cols);
    case 4: return multiply_tile_rows<4>(kc, a, b, c, ldc, alpha, beta, cols);
    case 3: return multiply_tile_rows<3>(kc, a, b, c, ldc, alpha, beta, cols);
    case 2: return multiply_tile_rows<2>(kc, a, b, c, ldc, alpha, beta, cols);
    default: return multiply_tile_rows<1>(kc, a, b, c, ldc, alpha, beta, cols);
  }
}

// One full 12-row micro-panel from row-major A (rows `ld` apart, contiguous along k): rows 0-7
// and rows 8-11 (with four zero rows) are transposed 8 k-steps at a time, and each k step stores
// its 8 + 4 values exactly (nothing lands past the panel).
void pack_a_rows(const float* src, int64_t ld, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 top[8], bottom[8];
    for (int r = 0; r < 8; ++r) top[r] = _mm256_loadu_ps(src + r * ld + k);
    for (int r = 0; r < 4; ++r) bottom[r] = _mm256_loadu_ps(src + (8 + r) * ld + k);
    for (int r = 4; r < 8; ++r) bottom[r] = _mm256_setzero_ps();
    transpose_8x8(top);
    transpose_8x8(bottom);
    for (int j = 0; j < 8; ++j) {
      _mm256_storeu_ps(dst + (k + j) * kRows, top[j]);
      _mm_storeu_ps(dst + (k + j) * kRows + 8, _mm256_castps256_ps128(bottom[j]));
    }
  }
  for (; k < kc; ++k) {
    for (int r = 0; r < kRows; ++r) dst[k * kRows + r] = src[r * ld + k];
  }
}

// One full 12-row micro-panel from transposed A (each k step holds 12 contiguous values): masked
// loads and stores, which touch nothing past those 12.
void pack_a_columns(const float* src, int64_t ld, int64_t kc, float* dst) {
  const __mmask16 twelve = first_lanes16(kRows);
  for (int64_t k = 0; k < kc; ++k) store16(dst + k * kRows, twelve, load16(src + k * ld, twelve));
}

void pack_a(bool trans, const float* src, int64_t ld, int64_t rows, int64_t kc, float* dst) {
  pack_panels<kRows, pack_a_rows, pack_a_columns>(!trans, src, ld, rows, kc, dst);
}

// One full 32-column micro-panel from row-major B (each k step holds 32 contiguous values). The
// panel starts 64-byte aligned and a k step is 128 bytes, so the stores are aligned.
void pack_b_rows(const float* src, int64_t ld, int64_t kc, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    _mm512_store_ps(dst + k * kCols, _mm512_loadu_ps(src + k * ld));
    _mm512_store_ps(dst + k * kCols + 16, _mm512_loadu_ps(src + k * ld + 16));
  }
}

void pack_b(bool trans, const float* src, int64_t ld, int64_t cols, int64_t kc, float* dst) {
  pack_panels<kCols, pack_transposing<kCols>, pack_b_rows>(trans, src, ld, cols, kc, dst);
}

}  // namespace

// No standard-library templates in this file (see gemm_avx2.cpp; tests/check_avx2_objects.sh).
// Problems too small to pack take the AVX2 kernel's unpacked loop: at those sizes the width of the
// registers is not what limits them, and every AVX-512 CPU has AVX2.
const MicroKernelF32& avx512_micro_kernel_f32() {
  static const MicroKernelF32 kernel{
      "avx512 12x32", kRows, kCols, multiply_tile, pack_a, pack_b, avx2_micro_kernel_f32().direct};
  return kernel;
}

}  // namespace bam::cpu::gemm_detail
