// The packing of gemm_f32_bf16's fast kernels (gemm.h, gemm_detail): op(A) into 16-row tiles and op(B)
// into tiles of bf16 pairs, both rounded to bf16 on the way (and through GELU when asked), in the
// layouts that Intel AMX's tiles load (gemm_amx.cpp) and that AVX-512 BF16's pair dot products read
// (gemm_bf16_dot_avx512bf16.cpp). Compiled with -mavx512bf16 -mavx512bw; entered only after
// cpu_has_avx512_bf16() said yes, and holding no inline or template code from elsewhere
// (tests/check_avx2_objects.sh).
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gelu_avx512.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gemm_detail {
namespace {

constexpr int kChunk = 32;          // K per A tile (32 bf16 = 64 bytes a row)
constexpr int kTileElements = 512;  // bf16 in one A or B tile (16 x 32)
constexpr int kBlock = 32;          // columns of a B panel, rows of an A block

// std::min without the template: an instantiation here would be a weak symbol compiled for AMX
// and AVX-512 that the linker could pick for the whole program (tests/check_avx2_objects.sh).
inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// 32 floats -> 32 bf16 (round to nearest even; NaN stays NaN), low 16 floats first.
inline __m512i to_bf16(__m512 low, __m512 high) { return (__m512i)_mm512_cvtne2ps_pbh(high, low); }

// Rows e and o (16 floats each) -> 16 bf16 pairs (e[j], o[j]): one row of a pair tile.
inline __m512i pair_rows(__m512 e, __m512 o) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, to_bf16(e, o));
}

// Transposes a 16 x 16 matrix of 32-bit words held as 16 row vectors.
inline void transpose_words(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // Now 128-bit lane q of r[4g + j] holds column 4q + j of rows 4g..4g+3: a transposed 4 x 4
  // block. Column c = 4q + j must gather lane q of r[j], r[4 + j], r[8 + j], r[12 + j]; two
  // rounds of 128-bit lane shuffles do that.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

// Stored rows 2p and 2p + 1 (`lanes` of each; zero at or past kc), through GELU with `gelu`: the
// two rows that pair_rows interleaves into one row of a pair tile.
inline void load_row_pair(const float* src, int64_t ld, int p, int64_t kc, __mmask16 lanes, bool gelu, __m512* e,
                          __m512* o) {
  *e = 2 * p < kc ? load16(src + 2 * p * ld, lanes) : _mm512_setzero_ps();
  *o = 2 * p + 1 < kc ? load16(src + (2 * p + 1) * ld, lanes) : _mm512_setzero_ps();
  if (gelu) {
    *e = gelu_avx512(*e);
    *o = gelu_avx512(*o);
  }
}

// One A tile: rows [0, rows) x k [0, kc) of op(A) (rows <= 16, kc <= 32), zero-padded. `src`
// points at op(A)(0, 0): rows are `ld` apart when !trans, columns are `ld` apart when trans.
// `sums` (trans only; null for none): the 16 rows' sums in double, to which the tile's f32 values
// (before rounding) are added k by k in order. `gelu`: op(A) is GELU of the stored values (GELU(0)
// is 0, so the padding stays zero).
void pack_a_tile(bool trans, const float* src, int64_t ld, int64_t rows, int64_t kc, uint16_t* dst, double* sums,
                 bool gelu) {
  if (!trans) {
    // Each row of op(A) is a row of the tile: stored as it is converted (no 16 registers held, which
    // the GELU's temporaries would spill).
    const __mmask16 low = first_lanes16(kc), high = first_lanes16(kc - 16);
    for (int r = 0; r < 16; ++r) {
      __m512i row = _mm512_setzero_si512();
      if (r < rows) {
        __m512 first = load16(src + r * ld, low), second = load16(src + r * ld + 16, high);
        if (gelu) {
          first = gelu_avx512(first);
          second = gelu_avx512(second);
        }
        row = to_bf16(first, second);
      }
      _mm512_store_si512(dst + r * 32, row);
    }
    return;
  }
  __m512i out[16];
  // Column k of op(A) is a stored row: pair stored rows 2p and 2p+1, then transpose the words.
  const __mmask16 lanes = first_lanes16(rows);
  __m512d sum_low = _mm512_setzero_pd(), sum_high = _mm512_setzero_pd();
  if (sums) {
    sum_low = _mm512_loadu_pd(sums);
    sum_high = _mm512_loadu_pd(sums + 8);
  }
  for (int p = 0; p < 16; ++p) {
    __m512 e, o;
    load_row_pair(src, ld, p, kc, lanes, gelu, &e, &o);
    out[p] = pair_rows(e, o);
    if (sums && 2 * p < kc) {
      sum_low = _mm512_add_pd(sum_low, low_doubles(e));
      sum_high = _mm512_add_pd(sum_high, high_doubles(e));
      if (2 * p + 1 < kc) {
        sum_low = _mm512_add_pd(sum_low, low_doubles(o));
        sum_high = _mm512_add_pd(sum_high, high_doubles(o));
      }
    }
  }
  if (sums) {
    _mm512_storeu_pd(sums, sum_low);
    _mm512_storeu_pd(sums + 8, sum_high);
  }
  transpose_words(out);
  for (int r = 0; r < 16; ++r) _mm512_store_si512(dst + r * 32, out[r]);
}

// One B tile in the pair layout: k [0, kc) x columns [0, cols) of op(B) (kc <= 32, cols <= 16),
// zero-padded. `src` points at op(B)(0, 0): rows are `ld` apart when !trans, columns when trans.
// `gelu`: op(B) is GELU of the stored values.
void pack_b_tile(bool trans, const float* src, int64_t ld, int64_t cols, int64_t kc, uint16_t* dst, bool gelu) {
  if (!trans) {
    // Each pair of rows of op(B) is a row of the tile: stored as it is converted (as in pack_a_tile).
    const __mmask16 lanes = first_lanes16(cols);
    for (int p = 0; p < 16; ++p) {
      __m512 e, o;
      load_row_pair(src, ld, p, kc, lanes, gelu, &e, &o);
      _mm512_store_si512(dst + p * 32, pair_rows(e, o));
    }
    return;
  }
  __m512i out[16];
  // Column n of op(B) is a stored row, whose K run converts straight to pairs; transpose.
  const __mmask16 low = first_lanes16(kc), high = first_lanes16(kc - 16);
  for (int n = 0; n < 16; ++n) {
    if (n >= cols) {
      out[n] = _mm512_setzero_si512();
      continue;
    }
    __m512 first = load16(src + n * ld, low), second = load16(src + n * ld + 16, high);
    if (gelu) {
      first = gelu_avx512(first);
      second = gelu_avx512(second);
    }
    out[n] = to_bf16(first, second);
  }
  transpose_words(out);
  for (int p = 0; p < 16; ++p) _mm512_store_si512(dst + p * 32, out[p]);
}

}  // namespace

void bf16_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t N, int64_t K, int64_t visit_begin,
                 int64_t visit_end, uint16_t* packed_b, bool gelu_b) {
  const int64_t chunks = (K + kChunk - 1) / kChunk, panels = (N + kBlock - 1) / kBlock;
  for (int64_t visit = visit_begin; visit < visit_end; ++visit) {
    // The order in which this range's items are packed: with trans_b, a panel's steps in turn (each
    // continues the same stored rows); otherwise a step's panels in turn, so that the 32 stored rows
    // of a step are read from start to end (panel after panel they would be read 128 bytes at a
    // time, 32 rows apart, which left the loads waiting on memory behind the GELU's arithmetic).
    const int64_t panel = trans_b ? visit / chunks : visit % panels;
    const int64_t step = trans_b ? visit % chunks : visit / panels;
    const int64_t item = panel * chunks + step;
    const int64_t k0 = step * kChunk, kc = smaller(kChunk, K - k0);
    for (int half = 0; half < 2; ++half) {
      const int64_t j0 = panel * kBlock + half * 16;
      const int64_t cols = smaller(16, N - j0);
      uint16_t* dst = packed_b + (item * 2 + half) * kTileElements;
      if (cols <= 0) {
        std::memset(dst, 0, kTileElements * sizeof(uint16_t));
      } else {
        pack_b_tile(trans_b, trans_b ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb, cols, kc, dst, gelu_b);
      }
    }
  }
}

void bf16_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K, int64_t i0, uint16_t* packed_a,
                 double* row_sums, bool gelu_a) {
  const int64_t chunks = (K + kChunk - 1) / kChunk;
  for (int64_t step = 0; step < chunks; ++step) {
    const int64_t k0 = step * kChunk, kc = smaller(kChunk, K - k0);
    for (int half = 0; half < 2; ++half) {
      const int64_t r0 = i0 + half * 16;
      const int64_t rows = smaller(16, M - r0);
      uint16_t* dst = packed_a + (step * 2 + half) * kTileElements;
      if (rows <= 0) {
        std::memset(dst, 0, kTileElements * sizeof(uint16_t));
      } else {
        pack_a_tile(trans_a, trans_a ? A + k0 * lda + r0 : A + r0 * lda + k0, lda, rows, kc, dst,
                    row_sums ? row_sums + half * 16 : nullptr, gelu_a);
      }
    }
  }
}

}  // namespace bam::cpu::gemm_detail
