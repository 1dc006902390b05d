// The integer arithmetic of JPEG reconstruction that the CPU decoder and the GPU kernels share:
// libjpeg's accurate IDCT butterfly ("islow", jidctint.c), its descaling and range limit, and the
// fixed-point YCbCr->RGB of jdcolor.c. One definition, so the GPU decode is the CPU decode (which
// tests/test_jpeg.cpp checks against djpeg bit for bit).
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace bam::data::jpeg_arith {

// IDCT constants: sqrt(2) * cos combinations, scaled by 2^13 and rounded (FIX_* in jidctint.c).
constexpr int kConstBits = 13;
constexpr int kPass1Bits = 2;
constexpr int32_t fix(double x) { return static_cast<int32_t>(x * (1 << kConstBits) + 0.5); }
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
// v[0..7] in place, before descaling. T is int64_t (reference, GPU) or a vector of int32 lanes.
template <typename T>
BAM_HD void idct8(T* v) {
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
BAM_HD void descale(T& x, int n) {
  x = (x + (1 << (n - 1))) >> n;
}

// Level shift (+128) and clamp to 0..255. libjpeg-turbo's C code indexes a table with the value
// modulo 1024, so values beyond +-512 (only from corrupt coefficients) wrap before clamping; its
// SIMD code, which djpeg and PIL run on x86-64 and ARM, saturates. We saturate: it is what users
// get and the simpler rule for GPU kernels; both agree on everything a valid stream produces.
BAM_HD uint8_t range_limit(int64_t x) {
  x += 128;
  return static_cast<uint8_t>(x < 0 ? 0 : (x > 255 ? 255 : x));
}

// The DC-only block's value (every sample of a block whose AC coefficients are all zero), with
// libjpeg's 32-bit product: the full computation gives exactly this for valid data.
BAM_HD uint8_t dc_only_value(int16_t coefficient, uint16_t quant) {
  int64_t value = static_cast<int32_t>(int64_t{coefficient} * quant * (1 << kPass1Bits));
  descale(value, kPass1Bits + 3);
  return range_limit(value);
}

// The two passes of idct_islow_block in 64-bit arithmetic: dequantised columns into a 32-bit
// workspace like libjpeg's, then rows, level shift and clamp; 8 rows of 8 samples, `stride` apart.
BAM_HD void idct_two_passes(const int16_t* coefficients, const uint16_t* quant, uint8_t* out, int64_t stride) {
  int32_t workspace[64];
  for (int col = 0; col < 8; ++col) {
    int64_t v[8];
    for (int row = 0; row < 8; ++row) v[row] = int64_t{coefficients[row * 8 + col]} * quant[row * 8 + col];
    idct8(v);
    for (int row = 0; row < 8; ++row) {
      descale(v[row], kPass1Shift);
      workspace[row * 8 + col] = static_cast<int32_t>(v[row]);
    }
  }
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

// ---- Colour conversion (jdcolor.c), 16-bit fixed point ----
// libjpeg tabulates these products; the tables hold exactly these expressions, so computing them
// is bit-identical:
//   R = Y + ((91881 * (Cr - 128) + 2^15) >> 16)
//   G = Y + ((-22554 * (Cb - 128) - 46802 * (Cr - 128) + 2^15) >> 16)
//   B = Y + ((116130 * (Cb - 128) + 2^15) >> 16)
// with each result clamped to 0..255 (>> is an arithmetic shift).
constexpr int kScaleBits = 16;
constexpr int32_t kOneHalf = int32_t{1} << (kScaleBits - 1);
constexpr int32_t fix16(double x) { return static_cast<int32_t>(x * (1 << kScaleBits) + 0.5); }
constexpr int32_t kCrToR = fix16(1.40200);
constexpr int32_t kCbToB = fix16(1.77200);
constexpr int32_t kCrToG = fix16(0.71414);
constexpr int32_t kCbToG = fix16(0.34414);
static_assert(kCrToR == 91881 && kCbToB == 116130 && kCrToG == 46802 && kCbToG == 22554);

BAM_HD uint8_t clamp255(int32_t v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }

BAM_HD void ycbcr_to_rgb_pixel(int32_t luma, int32_t cb, int32_t cr, uint8_t* rgb) {
  int32_t b = cb - 128, r = cr - 128;
  rgb[0] = clamp255(luma + ((kCrToR * r + kOneHalf) >> kScaleBits));
  rgb[1] = clamp255(luma + ((-kCbToG * b - kCrToG * r + kOneHalf) >> kScaleBits));
  rgb[2] = clamp255(luma + ((kCbToB * b + kOneHalf) >> kScaleBits));
}

}  // namespace bam::data::jpeg_arith
