// libjpeg's accurate integer inverse DCT ("islow", jidctint.c): the reference version in 64-bit
// scalar arithmetic (the specification), and a fast version that runs the same arithmetic on
// 8 int32 lanes (one lane per column, then per row) and falls back to the reference for blocks
// whose values could overflow 32 bits. Both give identical results; tests/test_jpeg.cpp checks it.
#include <algorithm>
#include <cstring>

#include "data/jpeg_internal.h"

namespace bam::data {

namespace {

// ---- IDCT constants: sqrt(2) * cos combinations, scaled by 2^13 and rounded (FIX_* there) ----
constexpr int kConstBits = 13;
constexpr int kPass1Bits = 2;
constexpr int32_t fix(double x) {
  return static_cast<int32_t>(x * (1 << kConstBits) + 0.5);
}
constexpr int32_t kFix0_298631336 = fix(0.298631336);
constexpr int32_t kFix0_390180644 = fix(0.390180644);
constexpr int32_t kFix0_541196100 = fix(0.541196100);
constexpr int32_t kFix0_765366865 = fix(0.765366865);
constexpr int32_t kFix0_899976223 = fix(0.899976223);
constexpr int32_t kFix1_175875602 = fix(1.175875602);
constexpr int32_t kFix1_501321110 = fix(1.501321110);
constexpr int32_t kFix1_847759065 = fix(1.847759065);
constexpr int32_t kFix1_961570560 = fix(1.961570560);
constexpr int32_t kFix2_053119869 = fix(2.053119869);
constexpr int32_t kFix2_562915447 = fix(2.562915447);
constexpr int32_t kFix3_072711026 = fix(3.072711026);
static_assert(kFix0_298631336 == 2446 && kFix1_175875602 == 9633 && kFix3_072711026 == 25172);

// Pass 1 keeps kPass1Bits extra bits; pass 2 removes them and the transform's factor of 8.
constexpr int kPass1Shift = kConstBits - kPass1Bits;
constexpr int kPass2Shift = kConstBits + kPass1Bits + 3;

// The 8-point IDCT of jidctint.c (even part from inputs 0,2,4,6, odd part from 7,5,3,1), on
// v[0..7] in place, before descaling. T is int64_t (reference) or a vector of int32 lanes.
template <typename T>
inline void idct8(T* v) {
  T z2 = v[2], z3 = v[6];
  T z1 = (z2 + z3) * kFix0_541196100;
  T tmp2 = z1 - z3 * kFix1_847759065;
  T tmp3 = z1 + z2 * kFix0_765366865;
  T tmp0 = (v[0] + v[4]) * (1 << kConstBits);
  T tmp1 = (v[0] - v[4]) * (1 << kConstBits);
  T tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3;
  T tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
  T o0 = v[7], o1 = v[5], o2 = v[3], o3 = v[1];
  T w1 = o0 + o3, w2 = o1 + o2, w3 = o0 + o2, w4 = o1 + o3;
  T z5 = (w3 + w4) * kFix1_175875602;
  o0 = o0 * kFix0_298631336;
  o1 = o1 * kFix2_053119869;
  o2 = o2 * kFix3_072711026;
  o3 = o3 * kFix1_501321110;
  w1 = w1 * -kFix0_899976223;
  w2 = w2 * -kFix2_562915447;
  w3 = w3 * -kFix1_961570560 + z5;
  w4 = w4 * -kFix0_390180644 + z5;
  o0 = o0 + w1 + w3;
  o1 = o1 + w2 + w4;
  o2 = o2 + w2 + w3;
  o3 = o3 + w1 + w4;
  v[0] = tmp10 + o3;
  v[7] = tmp10 - o3;
  v[1] = tmp11 + o2;
  v[6] = tmp11 - o2;
  v[2] = tmp12 + o1;
  v[5] = tmp12 - o1;
  v[3] = tmp13 + o0;
  v[4] = tmp13 - o0;
}

// Round-half-up division by 2^n (libjpeg's DESCALE). By reference: 32-byte vectors passed by
// value would change the ABI between SSE2 and AVX2 clones.
template <typename T>
inline void descale(T& x, int n) {
  x = (x + (1 << (n - 1))) >> n;
}

// Level shift (+128) and clamp to 0..255. libjpeg-turbo's C code indexes a table with the value
// modulo 1024, so values beyond +-512 (only from corrupt coefficients) wrap before clamping; its
// SIMD code, which djpeg and PIL run on x86-64 and ARM, saturates. We saturate: it is what users
// get and the simpler rule for GPU kernels; both agree on everything a valid stream produces.
inline uint8_t range_limit(int64_t x) {
  return static_cast<uint8_t>(std::clamp<int64_t>(x + 128, 0, 255));
}

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
  int64_t value = static_cast<int32_t>(int64_t{coefficients[0]} * quant[0] * (1 << kPass1Bits));
  descale(value, kPass1Bits + 3);
  uint64_t row = uint64_t{range_limit(value)} * 0x0101010101010101ull;
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
#if defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
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
  // Pass 1: columns, dequantising on the way; stored as 32-bit ints like libjpeg's workspace.
  int32_t workspace[64];
  for (int col = 0; col < 8; ++col) {
    int64_t v[8];
    for (int row = 0; row < 8; ++row) {
      v[row] = int64_t{coefficients[row * 8 + col]} * quant[row * 8 + col];
    }
    idct8(v);
    for (int row = 0; row < 8; ++row) {
      descale(v[row], kPass1Shift);
      workspace[row * 8 + col] = static_cast<int32_t>(v[row]);
    }
  }
  // Pass 2: rows, then level shift and clamp.
  for (int row = 0; row < 8; ++row) {
    int64_t v[8];
    for (int k = 0; k < 8; ++k) v[k] = workspace[row * 8 + k];
    idct8(v);
    uint8_t* dst = out + row * stride;
    for (int k = 0; k < 8; ++k) {
      descale(v[k], kPass2Shift);
      dst[k] = range_limit(v[k]);
    }
  }
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
