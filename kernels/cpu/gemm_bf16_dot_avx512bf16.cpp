// The f32 GEMM with bf16 operands on AVX-512 BF16 (gemm_f32_bf16 in gemm.h, on CPUs that have the
// bf16 pair dot product but no AMX tiles: AMD Zen 4 and later, Intel Cooper Lake): the operands
// packed for the tiles (gemm_bf16_pack_avx512bf16.cpp) multiplied with VDPBF16PS. Compiled with
// -mavx512bf16 -mavx512bw; gemm_bf16.cpp only calls in here after cpu_has_avx512_bf16() said yes.
//
// VDPBF16PS in two sentences. Each 32-bit lane of its two sources holds a pair of bf16 values, and
// the instruction adds both products of the lane's pairs (each exact in f32) into the lane's f32
// accumulator. The packed B tile holds the pair (B[2p][n], B[2p+1][n]) in lane n of its row p, so
// with row m's pair (A[m][2p], A[m][2p+1]) broadcast to every lane, one instruction adds two steps
// of k into 16 columns of C's row m: 32 multiply-adds, where an f32 FMA does 16.
//
// Blocking. A 32 x 32 block of C (a packed A block against one 32-column panel of packed B) is
// done in four groups of 8 rows. A group keeps its 8 x 32 corner of C in 16 zmm accumulators for
// the whole K slice; per pair of k it loads the panel's two 16-column B rows and issues two
// products per row, with the row's A pair broadcast to every lane. (Groups of 12 rows, with 24
// accumulators, issue fewer loads per product but measured no faster on AMD Zen 5.)
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gemm_detail {
namespace {

constexpr int kChunk = 32;          // K per packed step (one A tile row: 32 bf16)
constexpr int kTileElements = 512;  // bf16 in one packed tile (16 x 32)
constexpr int kBlock = 32;          // rows of an A block, columns of a B panel
constexpr int kGroupRows = 8;       // rows of C a group keeps in registers

// std::min without the template (tests/check_avx2_objects.sh: no weak symbols compiled here).
inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// The bf16 pair at p (two uint16_t), in every lane.
inline __m512bh broadcast_pair(const uint16_t* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof(pair));
  return (__m512bh)_mm512_set1_epi32(pair);
}

// Rows [0, rows) x columns [0, cols) of C at c (rows <= 8; cols <= 32, and > 16 when TWO_COLS)
// from `chunks` packed steps: a points at the group's first row in step 0's A tile (a row every 32
// values, a step every 1024), b at the panel's step 0 (its two 16-column tiles 512 apart, a step
// every 1024). The packing zeroes every row, column and k past the matrix, so the group always
// multiplies all 8 rows and reads and writes only C's.
// `plain` (alpha 1, beta 0 or 1): the accumulators start from C's rows (beta 1; from `bias` in
// every row instead, when given) or zero, and are stored as they are. Otherwise they start from
// zero and c = alpha * acc + beta * c (C not read when beta is 0).
template <bool TWO_COLS>
void multiply_group(int64_t chunks, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc, int rows, int cols,
                    float alpha, float beta, const float* bias) {
  const bool plain = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
  const __mmask16 low = first_lanes16(cols), high = first_lanes16(cols - 16);
  __m512 acc[kGroupRows][2];
#pragma GCC unroll 8
  for (int r = 0; r < kGroupRows; ++r) {
    acc[r][0] = _mm512_setzero_ps();
    acc[r][1] = _mm512_setzero_ps();
    if (plain && r < rows && (bias || beta == 1.0f)) {
      const float* start = bias ? bias : c + r * ldc;
      acc[r][0] = load16(start, low);
      if (TWO_COLS) acc[r][1] = load16(start + 16, high);
    }
  }
  for (int64_t step = 0; step < chunks; ++step) {
    const uint16_t* a_step = a + step * 2 * kTileElements;
    const uint16_t* b_step = b + step * 2 * kTileElements;
#pragma GCC unroll 2
    for (int p = 0; p < 16; ++p) {
      const __m512bh b0 = (__m512bh)_mm512_load_si512(b_step + p * 32);
      const __m512bh b1 = TWO_COLS ? (__m512bh)_mm512_load_si512(b_step + kTileElements + p * 32) : b0;
#pragma GCC unroll 8
      for (int r = 0; r < kGroupRows; ++r) {
        const __m512bh pair = broadcast_pair(a_step + r * 32 + 2 * p);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], pair, b0);
        if (TWO_COLS) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], pair, b1);
      }
    }
  }
  const __m512 valpha = _mm512_set1_ps(alpha), vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < kGroupRows; ++r) {
    if (r >= rows) break;
    float* c_row = c + r * ldc;
#pragma GCC unroll 2
    for (int h = 0; h < (TWO_COLS ? 2 : 1); ++h) {
      const __mmask16 mask = h == 0 ? low : high;
      __m512 value = acc[r][h];
      if (!plain) {
        value = _mm512_mul_ps(value, valpha);
        if (beta != 0.0f) value = _mm512_add_ps(value, _mm512_mul_ps(vbeta, load16(c_row + 16 * h, mask)));
      }
      // The masked store even when every lane is written (not store16): for C's rows, 2 KB apart
      // in a 17 MB product, Zen 5 ran the plain store 1.2 to 1.5 times slower (the README model's fc1
      // forward, 8704 x 512 x 128: 2.3-2.7 against 1.7-2.0 ms).
      _mm512_mask_storeu_ps(c_row + 16 * h, mask, value);
    }
  }
}

}  // namespace

void dot_multiply_panels(const uint16_t* packed_a, const uint16_t* packed_b, int64_t M, int64_t N, int64_t K,
                         int64_t i0, int64_t panel_begin, int64_t panel_end, float alpha, float beta, const float* bias,
                         float* C, int64_t ldc) {
  const int64_t chunks = (K + kChunk - 1) / kChunk;
  const int rows = static_cast<int>(smaller(kBlock, M - i0));
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    const int64_t j0 = panel * kBlock;
    const int cols = static_cast<int>(smaller(kBlock, N - j0));
    const uint16_t* b = packed_b + panel * chunks * 2 * kTileElements;
    const float* panel_bias = bias ? bias + j0 : nullptr;
    for (int r0 = 0; r0 < rows; r0 += kGroupRows) {
      // Row r0 of the block: its two tiles hold the 32 rows one after the other, 32 values apart.
      const uint16_t* a = packed_a + r0 * 32;
      float* c = C + (i0 + r0) * ldc + j0;
      const int group_rows = static_cast<int>(smaller(kGroupRows, rows - r0));
      if (cols > 16) {
        multiply_group<true>(chunks, a, b, c, ldc, group_rows, cols, alpha, beta, panel_bias);
      } else {
        multiply_group<false>(chunks, a, b, c, ldc, group_rows, cols, alpha, beta, panel_bias);
      }
    }
  }
}

}  // namespace bam::cpu::gemm_detail
