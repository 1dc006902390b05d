// AVX2/FMA pieces of the f32 GEMM: the 6x16 micro-kernel and the packing routines that feed it.
// Compiled with -mavx2 -mfma; gemm.cpp only calls in here after checking the CPU at run time.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_x86_pack.h"

namespace bam::cpu::gemm_detail {
namespace {

// Lane mask for the first `count` (0..8) lanes, for masked loads and stores at row ends.
inline __m256i first_lanes(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The tile: 6 rows x 16 columns (see multiply_tile_fixed).
constexpr int kRows = 6;
constexpr int kCols = 16;

// Accumulates a ROWS x (8 * HALVES) tile over kc steps, then writes its top-left rows x cols
// corner (cols > 8 * (HALVES - 1)): c = alpha * acc + beta * c, c not read when beta == 0.
// <6, 2> is the main kernel: 12 accumulators + 2 B vectors + 1 broadcast A value = 15 of the 16
// ymm registers, and 12 independent FMAs per k step (8 loads) keep both FMA pipes busy. Smaller
// instances serve the edges of C without computing (much) padding. The constant loops must be
// unrolled (pragmas) so that the accumulators live in registers.
template <int ROWS, int HALVES>
void multiply_tile_fixed(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         float alpha, float beta, int cols) {
  // Start pulling the C tile towards L1 now; it is only touched after the k loop.
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8 * HALVES - 1), _MM_HINT_T0);
  }
  __m256 acc[ROWS][HALVES];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 8
    for (int h = 0; h < HALVES; ++h) acc[r][h] = _mm256_setzero_ps();
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m256 b_half[HALVES];
#pragma GCC unroll 8
    for (int h = 0; h < HALVES; ++h) b_half[h] = _mm256_load_ps(b + 8 * h);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m256 a_value = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 8
      for (int h = 0; h < HALVES; ++h) acc[r][h] = _mm256_fmadd_ps(a_value, b_half[h], acc[r][h]);
    }
    a += kRows;
    b += kCols;
  }
  const __m256 valpha = _mm256_set1_ps(alpha);
  const __m256 vbeta = _mm256_set1_ps(beta);
  // Lanes of the last half that lie inside C.
  const __m256i last_mask = first_lanes(cols - 8 * (HALVES - 1));
  const bool last_full = cols == 8 * HALVES;
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    float* c_row = c + r * ldc;
#pragma GCC unroll 8
    for (int h = 0; h < HALVES; ++h) {
      __m256 value = _mm256_mul_ps(acc[r][h], valpha);
      if (h < HALVES - 1 || last_full) {
        if (beta != 0.0f) value = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(c_row + 8 * h), value);
        _mm256_storeu_ps(c_row + 8 * h, value);
      } else {
        if (beta != 0.0f) {
          value = _mm256_fmadd_ps(vbeta, _mm256_maskload_ps(c_row + 8 * h, last_mask), value);
        }
        _mm256_maskstore_ps(c_row + 8 * h, last_mask, value);
      }
    }
  }
}

template <int ROWS>
void multiply_tile_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                        float alpha, float beta, int cols) {
  if (cols > 8) {
    multiply_tile_fixed<ROWS, 2>(kc, a, b, c, ldc, alpha, beta, cols);
  } else {
    multiply_tile_fixed<ROWS, 1>(kc, a, b, c, ldc, alpha, beta, cols);
  }
}

void multiply_tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                   float beta, int rows, int cols) {
  switch (rows) {
    case 6:
      return multiply_tile_rows<6>(kc, a, b, c, ldc, alpha, beta, cols);
    case 5:
      return multiply_tile_rows<5>(kc, a, b, c, ldc, alpha, beta, cols);
    case 4:
      return multiply_tile_rows<4>(kc, a, b, c, ldc, alpha, beta, cols);
    case 3:
      return multiply_tile_rows<3>(kc, a, b, c, ldc, alpha, beta, cols);
    case 2:
      return multiply_tile_rows<2>(kc, a, b, c, ldc, alpha, beta, cols);
    default:
      return multiply_tile_rows<1>(kc, a, b, c, ldc, alpha, beta, cols);
  }
}

// One full 6-row micro-panel from row-major A (rows `ld` apart, contiguous along k): transpose
// 8 k-steps at a time. Each 8-float store spills 2 floats into the next step's slot, which the
// next store overwrites; the last one lands in the caller's slack.
void pack_a_rows(const float* src, int64_t ld, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 row[8];
    for (int r = 0; r < kRows; ++r) row[r] = _mm256_loadu_ps(src + r * ld + k);
    row[6] = row[7] = _mm256_setzero_ps();
    transpose_8x8(row);
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (k + j) * kRows, row[j]);
  }
  for (; k < kc; ++k) {
    for (int r = 0; r < kRows; ++r) dst[k * kRows + r] = src[r * ld + k];
  }
}

// One full 6-row micro-panel from transposed A (each k step holds 6 contiguous values).
// (Copying several panels per pass over k, to visit each source row fewer times, measured no
// faster on Zen 5; all panels per pass was ~8% slower overall.)
void pack_a_columns(const float* src, int64_t ld, int64_t kc, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* from = src + k * ld;
    float* to = dst + k * kRows;
    _mm_storeu_ps(to, _mm_loadu_ps(from));
    // Two floats via a 64-bit load: never reads past the 6 values that belong to the panel.
    // (_mm_loadl_epi64/_mm_storel_epi64 are the unaligned 64-bit moves; _mm_load_sd reads through
    // a double*, which must be 8-byte aligned, and from + 4 need not be: UBSan's finding.)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(to + 4), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(from + 4)));
  }
}

void pack_a(bool trans, const float* src, int64_t ld, int64_t rows, int64_t kc, float* dst) {
  pack_panels<kRows, pack_a_rows, pack_a_columns>(!trans, src, ld, rows, kc, dst);
}

// One full 16-column micro-panel from row-major B (each k step holds 16 contiguous values).
void pack_b_rows(const float* src, int64_t ld, int64_t kc, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    _mm256_store_ps(dst + k * kCols, _mm256_loadu_ps(src + k * ld));
    _mm256_store_ps(dst + k * kCols + 8, _mm256_loadu_ps(src + k * ld + 8));
  }
}

void pack_b(bool trans, const float* src, int64_t ld, int64_t cols, int64_t kc, float* dst) {
  pack_panels<kCols, pack_transposing<kCols>, pack_b_rows>(trans, src, ld, cols, kc, dst);
}

// ---------------------------------------------------------------------------------------------
// The unpacked path for tiny problems (attention's per-head products, for one): no packing, eight
// lanes along a contiguous dimension.

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// c[0, width) = alpha * sum_k a(k) * b[k * ldb + (0, width)] + beta * c for 8 * (V - 1) < width
// <= 8 * V: V vector accumulators, a compile-time count so that they stay in registers over the
// whole k loop (a(k) is op(A)'s row, stride a_step). Only the last vector is masked.
template <int V>
void row_block_fixed(int64_t K, float alpha, const float* a, int64_t a_step, const float* b, int64_t ldb, float beta,
                     float* c, int64_t width) {
  const __m256i tail = first_lanes(width - 8 * (V - 1));
  __m256 acc[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 av = _mm256_set1_ps(a[k * a_step]);
    const float* b_row = b + k * ldb;
#pragma GCC unroll 4
    for (int v = 0; v < V - 1; ++v) acc[v] = _mm256_fmadd_ps(av, _mm256_loadu_ps(b_row + 8 * v), acc[v]);
    acc[V - 1] = _mm256_fmadd_ps(av, _mm256_maskload_ps(b_row + 8 * (V - 1), tail), acc[V - 1]);
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const __m256i mask = v + 1 < V ? _mm256_set1_epi32(-1) : tail;
    __m256 out = _mm256_mul_ps(_mm256_set1_ps(alpha), acc[v]);
    if (beta != 0.0f) out = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_maskload_ps(c + 8 * v, mask), out);
    _mm256_maskstore_ps(c + 8 * v, mask, out);
  }
}

// The same for any width <= 32.
inline void row_block(int64_t K, float alpha, const float* a, int64_t a_step, const float* b, int64_t ldb, float beta,
                      float* c, int64_t width) {
  switch ((width + 7) / 8) {
    case 1: return row_block_fixed<1>(K, alpha, a, a_step, b, ldb, beta, c, width);
    case 2: return row_block_fixed<2>(K, alpha, a, a_step, b, ldb, beta, c, width);
    case 3: return row_block_fixed<3>(K, alpha, a, a_step, b, ldb, beta, c, width);
    default: return row_block_fixed<4>(K, alpha, a, a_step, b, ldb, beta, c, width);
  }
}

// sum_k a[k] * b[k] over contiguous vectors.
inline float dot(const float* a, const float* b, int64_t K) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), acc1);
  }
  for (; k < K; k += 8) {
    const __m256i mask = first_lanes(K - k < 8 ? K - k : 8);
    acc0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, mask), _mm256_maskload_ps(b + k, mask), acc0);
  }
  return horizontal_sum(_mm256_add_ps(acc0, acc1));
}

// No standard-library templates in this file: an instantiation compiled here with AVX2 could be the
// copy the linker keeps for the whole program, and run on a CPU without AVX2 (the ctest
// avx2_objects_self_contained checks).
void direct_multiply(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // op(A)'s row i: element k at a_row[k * a_step].
  const int64_t a_step = trans_a ? lda : 1;
  for (int64_t i = 0; i < M; ++i) {
    const float* a_row = trans_a ? A + i : A + i * lda;
    float* c_row = C + i * ldc;
    if (!trans_b) {
      // Rows of B are contiguous along j: axpy them into the row of C, 32 columns at a time.
      for (int64_t j0 = 0; j0 < N; j0 += 32)
        row_block(K, alpha, a_row, a_step, B + j0, ldb, beta, c_row + j0, N - j0 < 32 ? N - j0 : 32);
    } else {
      // Rows of B are contiguous along k: one dot product per element of C (a strided row of
      // op(A), when both are transposed, is summed element by element: no product here uses it).
      for (int64_t j = 0; j < N; ++j) {
        const float* b_row = B + j * ldb;
        float sum = 0.0f;
        if (trans_a) {
          for (int64_t k = 0; k < K; ++k) sum += a_row[k * a_step] * b_row[k];
        } else {
          sum = dot(a_row, b_row, K);
        }
        const float value = alpha * sum;
        c_row[j] = beta == 0.0f ? value : value + beta * c_row[j];
      }
    }
  }
}

}  // namespace

const MicroKernelF32& avx2_micro_kernel_f32() {
  static const MicroKernelF32 kernel{"avx2-fma 6x16", kRows, kCols, multiply_tile, pack_a, pack_b, direct_multiply};
  return kernel;
}

}  // namespace bam::cpu::gemm_detail
