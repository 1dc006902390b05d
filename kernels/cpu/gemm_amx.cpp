// The f32 GEMM with bf16 operands on Intel AMX (gemm_f32_bf16 in gemm.h, when the CPU has
// AMX-BF16): both operands are rounded to bf16 while they are packed, and the tiles accumulate
// their products in f32. Compiled with -mamx-tile -mamx-bf16 -mavx512bf16 -mavx512bw; gemm_bf16.cpp
// only calls in here after cpu_has_amx_bf16() said yes.
//
// AMX in three sentences. A core has eight tile registers of up to 16 rows x 64 bytes and one
// tile unit. TDPBF16PS takes a 16 x 32 bf16 tile of A, a 32 x 16 bf16 tile of B (stored as 16 rows
// of 16 bf16 *pairs*: row p holds B[2p][n] and B[2p+1][n] side by side, the "VNNI" layout) and
// adds their product into a 16 x 16 f32 tile: 16,384 multiply-adds in one instruction. So the
// work here is mostly packing: op(A) into row tiles, op(B) into pair tiles, both rounded to bf16.
//
// Blocking. Four C tiles make a 32 x 32 block of C; per step of 32 along K, two A tiles and two
// B tiles are loaded and four products issued (all eight tile registers). The accumulators stay
// in the tiles for a whole K slice: a task packs 32 rows of op(A) for the slice, then sweeps its
// 32-column panels of the slice's packed op(B) (packed once per slice, by all threads).
// The driver (threads, buffers) is in gemm_bf16.cpp: this file holds only what needs the AMX and
// AVX-512 instructions, and no inline or template code from elsewhere (tests/check_avx2_objects.sh).
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gelu_avx512.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gemm_detail {
namespace {

constexpr int kTileRows = 16;         // rows of every tile; also the columns of a C tile
constexpr int kChunk = 32;            // K per A tile (32 bf16 = 64 bytes a row)
constexpr int kTileElements = 512;    // bf16 in one A or B tile (16 x 32)
constexpr int kBlock = 32;            // C block: 2 x 2 tiles
constexpr int64_t kStrideBytes = 64;  // row stride of a packed tile

// The tile configuration: palette 1, every tile 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

TileConfig make_config() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = kStrideBytes;
    config.rows[t] = kTileRows;
  }
  return config;
}

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
  *e = 2 * p < kc ? _mm512_maskz_loadu_ps(lanes, src + 2 * p * ld) : _mm512_setzero_ps();
  *o = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(lanes, src + (2 * p + 1) * ld) : _mm512_setzero_ps();
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
        __m512 first = _mm512_maskz_loadu_ps(low, src + r * ld),
               second = _mm512_maskz_loadu_ps(high, src + r * ld + 16);
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
    __m512 first = _mm512_maskz_loadu_ps(low, src + n * ld), second = _mm512_maskz_loadu_ps(high, src + n * ld + 16);
    if (gelu) {
      first = gelu_avx512(first);
      second = gelu_avx512(second);
    }
    out[n] = to_bf16(first, second);
  }
  transpose_words(out);
  for (int p = 0; p < 16; ++p) _mm512_store_si512(dst + p * 32, out[p]);
}

// How a C tile starts and ends. `direct`: a whole 16 x 16 tile with alpha 1 and beta 0 or 1 is
// loaded from (beta 1) and stored to C itself; any other goes through `scratch`, then
// c = alpha * product + beta * c on its rows x cols (c not read when beta == 0).
// `bias` (null for none; only with alpha 1 and beta 1) stands in for C's old rows: every row of
// the tile starts as the same 16 values. A direct tile loads that row 16 times (a tile load with
// stride 0); any other adds it at the end, as beta * c would have.
struct TileTarget {
  float* c;
  const float* bias;
  int rows;
  int cols;
  bool direct;
};

// GCC's tile intrinsics paste their tile number into the assembly text, so it must be a literal:
// these switch over the four C tiles.
inline void load_c_tile(int tile, const float* c, int64_t stride) {
  switch (tile) {
    case 0: _tile_loadd(0, c, stride); break;
    case 1: _tile_loadd(1, c, stride); break;
    case 2: _tile_loadd(2, c, stride); break;
    default: _tile_loadd(3, c, stride); break;
  }
}
inline void zero_c_tile(int tile) {
  switch (tile) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
  }
}
inline void store_c_tile(int tile, float* c, int64_t stride) {
  switch (tile) {
    case 0: _tile_stored(0, c, stride); break;
    case 1: _tile_stored(1, c, stride); break;
    case 2: _tile_stored(2, c, stride); break;
    default: _tile_stored(3, c, stride); break;
  }
}

inline void start_tile(int tile, const TileTarget& t, int64_t ldc, float beta) {
  if (t.direct && t.bias) {
    load_c_tile(tile, t.bias, 0);
  } else if (t.direct && beta == 1.0f) {
    load_c_tile(tile, t.c, ldc * int64_t{sizeof(float)});
  } else {
    zero_c_tile(tile);
  }
}

inline void finish_tile(int tile, const TileTarget& t, int64_t ldc, float alpha, float beta, float* scratch) {
  if (t.rows <= 0 || t.cols <= 0) return;
  if (t.direct) {
    store_c_tile(tile, t.c, ldc * int64_t{sizeof(float)});
    return;
  }
  store_c_tile(tile, scratch, 16 * int64_t{sizeof(float)});
  for (int r = 0; r < t.rows; ++r) {
    float* c_row = t.c + r * ldc;
    const float* s = scratch + r * 16;
    if (t.bias) {
      for (int j = 0; j < t.cols; ++j) c_row[j] = alpha * s[j] + t.bias[j];
    } else if (beta == 0.0f) {
      for (int j = 0; j < t.cols; ++j) c_row[j] = alpha * s[j];
    } else {
      for (int j = 0; j < t.cols; ++j) c_row[j] = alpha * s[j] + beta * c_row[j];
    }
  }
}

// One 32 x 32 block of C (its top-left rows x cols inside C) from `chunks` packed steps of A
// (a: chunk c's two tiles at a + 2c * 512, a + (2c + 1) * 512) and of B (likewise). TWO_ROWS /
// TWO_COLS: whether the second tile row / column holds any of C (edges skip the empty half).
template <bool TWO_ROWS, bool TWO_COLS>
void multiply_block(int64_t chunks, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc, int rows, int cols,
                    float alpha, float beta, const float* bias) {
  alignas(64) float scratch[16 * 16];
  const bool plain = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
  TileTarget t[4];
  for (int q = 0; q < 4; ++q) {
    const int r0 = (q / 2) * 16, c0 = (q % 2) * 16;
    t[q].c = c + r0 * ldc + c0;
    t[q].bias = bias && c0 < cols ? bias + c0 : nullptr;
    t[q].rows = static_cast<int>(smaller(16, rows - r0));
    t[q].cols = static_cast<int>(smaller(16, cols - c0));
    t[q].direct = plain && t[q].rows == 16 && t[q].cols == 16;
  }
  start_tile(0, t[0], ldc, beta);
  if (TWO_COLS) start_tile(1, t[1], ldc, beta);
  if (TWO_ROWS) start_tile(2, t[2], ldc, beta);
  if (TWO_ROWS && TWO_COLS) start_tile(3, t[3], ldc, beta);
  for (int64_t step = 0; step < chunks; ++step) {
    const uint16_t* a_step = a + step * 2 * kTileElements;
    const uint16_t* b_step = b + step * 2 * kTileElements;
    _tile_loadd(4, a_step, kStrideBytes);
    _tile_loadd(6, b_step, kStrideBytes);
    if (TWO_ROWS) _tile_loadd(5, a_step + kTileElements, kStrideBytes);
    if (TWO_COLS) _tile_loadd(7, b_step + kTileElements, kStrideBytes);
    _tile_dpbf16ps(0, 4, 6);
    if (TWO_COLS) _tile_dpbf16ps(1, 4, 7);
    if (TWO_ROWS) _tile_dpbf16ps(2, 5, 6);
    if (TWO_ROWS && TWO_COLS) _tile_dpbf16ps(3, 5, 7);
  }
  finish_tile(0, t[0], ldc, alpha, beta, scratch);
  if (TWO_COLS) finish_tile(1, t[1], ldc, alpha, beta, scratch);
  if (TWO_ROWS) finish_tile(2, t[2], ldc, alpha, beta, scratch);
  if (TWO_ROWS && TWO_COLS) finish_tile(3, t[3], ldc, alpha, beta, scratch);
}

}  // namespace

void amx_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t N, int64_t K, int64_t visit_begin, int64_t visit_end,
                uint16_t* packed_b, bool gelu_b) {
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

void amx_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K, int64_t i0, uint16_t* packed_a,
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

void amx_multiply_panels(const uint16_t* packed_a, const uint16_t* packed_b, int64_t M, int64_t N, int64_t K,
                         int64_t i0, int64_t panel_begin, int64_t panel_end, float alpha, float beta, const float* bias,
                         float* C, int64_t ldc) {
  static const TileConfig config = make_config();
  const int64_t chunks = (K + kChunk - 1) / kChunk;
  const int rows = static_cast<int>(smaller(kBlock, M - i0));
  _tile_loadconfig(&config);
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    const int64_t j0 = panel * kBlock;
    const int cols = static_cast<int>(smaller(kBlock, N - j0));
    const uint16_t* b = packed_b + panel * chunks * 2 * kTileElements;
    float* c = C + i0 * ldc + j0;
    const float* panel_bias = bias ? bias + j0 : nullptr;
    if (rows > 16 && cols > 16) {
      multiply_block<true, true>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    } else if (rows > 16) {
      multiply_block<true, false>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    } else if (cols > 16) {
      multiply_block<false, true>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    } else {
      multiply_block<false, false>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    }
  }
  // Hands the tile state back, so that the thread's context switches stop saving 8 KiB of it.
  _tile_release();
}

}  // namespace bam::cpu::gemm_detail
