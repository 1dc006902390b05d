// libjpeg's accurate integer inverse DCT ("islow", jidctint.c): the reference version in 64-bit
// scalar arithmetic (the specification), and a fast version that runs the same arithmetic on
// 8 int32 lanes (one lane per column, then per row) and falls back to the reference for blocks
// whose values could overflow 32 bits. Both give identical results; tests/test_jpeg.cpp checks it.
#include <algorithm>
#include <cstring>

#include "data/jpeg_arith.h"
#include "data/jpeg_internal.h"

namespace bam::data {

namespace {

using namespace jpeg_arith;

// Fills the block with one value when all AC coefficients are zero (common); the full computation
// gives exactly this value everywhere. Returns false when the block has AC energy.
inline bool dc_only_block(const int16_t* coefficients, const uint16_t* quant, uint8_t* out,
                          ptrdiff_t stride) {
  uint64_t any = 0;
  for (int k = 0; k < 64; k += 4) {
    uint64_t word;
    std::memcpy(&word, coefficients + k, 8);
    any |= k == 0 ? word & ~uint64_t{0xFFFF} : word;
  }
  if (any != 0) return false;
  uint64_t row = uint64_t{dc_only_value(coefficients[0], quant[0])} * 0x0101010101010101ull;
  for (int r = 0; r < 8; ++r) std::memcpy(out + r * stride, &row, 8);
  return true;
}

#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BAM_HAVE_VECTOR_IDCT 1
// Eight int32 lanes; GCC and Clang lower the arithmetic to SSE2/AVX2 (or NEON) instructions.
typedef int32_t Lanes __attribute__((vector_size(32)));
typedef int16_t Int16x8 __attribute__((vector_size(16)));
typedef uint16_t Uint16x8 __attribute__((vector_size(16)));
typedef uint8_t Bytes32 __attribute__((vector_size(32)));
typedef uint8_t Bytes8 __attribute__((vector_size(8)));

// Largest magnitude of a pass input for which no int32 intermediate can overflow: the largest
// intermediate of idct8 is below 178219 * max|input| (sum of the constants' magnitudes along the
// longest path), and 178219 * 8191 < 2^31.
constexpr int32_t kLaneSafeInput = 8191;

inline bool any_beyond(const Lanes* v, int32_t limit) {
  Lanes beyond = {};
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) beyond |= (v[k] > limit) | (v[k] < -limit);
  int32_t any = 0;
#pragma GCC unroll 8
  for (int lane = 0; lane < 8; ++lane) any |= beyond[lane];
  return any != 0;
}

// 8x8 transpose in three rounds of interleaving (pairs of 32-bit, of 64-bit, then 128-bit halves).
inline void transpose8(Lanes* m) {
  Lanes t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(m[i], m[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(m[i], m[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * j + 1] =
          __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    m[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    m[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// The same arithmetic as idct_islow_block in int32 lanes; false when the block's values are too
// large for that to be exact (the caller then uses the reference).
BAM_VECTOR_CLONES
bool idct_islow_block_lanes(const int16_t* coefficients, const uint16_t* quant, uint8_t* out,
                            ptrdiff_t stride) {
  // Pass 1 works down the columns: rows[r] holds dequantised row r, one column per lane.
  Lanes rows[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    Int16x8 c;
    Uint16x8 q;
    std::memcpy(&c, coefficients + 8 * r, sizeof(c));
    std::memcpy(&q, quant + 8 * r, sizeof(q));
    rows[r] = __builtin_convertvector(c, Lanes) * __builtin_convertvector(q, Lanes);
  }
  if (any_beyond(rows, kLaneSafeInput)) return false;
  idct8(rows);
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) descale(rows[r], kPass1Shift);
  if (any_beyond(rows, kLaneSafeInput)) return false;
  // Pass 2 works along the rows: after the transpose, rows[k] holds entry k of every row.
  transpose8(rows);
  idct8(rows);
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {
    descale(rows[k], kPass2Shift);
    Lanes value = rows[k] + 128;
    value &= value > 0;  // comparisons give all-ones lanes where true
    Lanes over = value > 255;
    rows[k] = (value & ~over) | (255 & over);
  }
  transpose8(rows);
  // Each lane now holds one byte's value in its low byte (little-endian): gather and store.
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    Bytes32 bytes = reinterpret_cast<Bytes32&>(rows[r]);
    Bytes8 row = __builtin_shufflevector(bytes, bytes, 0, 4, 8, 12, 16, 20, 24, 28);
    std::memcpy(out + r * stride, &row, 8);
  }
  return true;
}
#endif

}  // namespace

void idct_islow_block(const int16_t* coefficients, const uint16_t* quant, uint8_t* out,
                      ptrdiff_t stride) {
  if (dc_only_block(coefficients, quant, out, stride)) return;
  idct_two_passes(coefficients, quant, out, stride);
}

namespace jpeg_detail {

void idct_islow_block_fast(const int16_t* coefficients, const uint16_t* quant, uint8_t* out,
                           ptrdiff_t stride) {
  if (dc_only_block(coefficients, quant, out, stride)) return;
#ifdef BAM_HAVE_VECTOR_IDCT
  if (idct_islow_block_lanes(coefficients, quant, out, stride)) return;
#endif
  idct_islow_block(coefficients, quant, out, stride);
}

}  // namespace jpeg_detail

}  // namespace bam::data
