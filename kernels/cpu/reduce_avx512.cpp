// AVX-512 column sums for the f32 sum reduction (reduce.cpp): the same double accumulation, each
// column's rows in order, with the accumulators of 64 columns held in eight zmm registers instead
// of an array in memory. Compiled with -mavx512f; reduce.cpp calls in here only after
// cpu_has_avx512().
#include <cstdint>

#include "kernels/cpu/reduce.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu {
namespace {

// The first `count` lanes (none for count <= 0, all 16 from 16 on).
inline __mmask16 lanes16(int64_t count) {
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << count) - 1u);
}

// The low / high 8 floats of v, widened to double.
inline __m512d low_doubles(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d high_doubles(__m512 v) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xEE)));
}

}  // namespace

void column_sums_f32_avx512(const float* x, int64_t rows, int64_t ld, int64_t width, double* out) {
  for (int64_t c0 = 0; c0 < width; c0 += 64) {
    const int64_t w = width - c0;
    const __mmask16 m0 = lanes16(w), m1 = lanes16(w - 16), m2 = lanes16(w - 32), m3 = lanes16(w - 48);
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * ld + c0;
      const __m512 v0 = _mm512_maskz_loadu_ps(m0, row);
      a0 = _mm512_add_pd(a0, low_doubles(v0));
      a1 = _mm512_add_pd(a1, high_doubles(v0));
      if (m1) {
        const __m512 v1 = _mm512_maskz_loadu_ps(m1, row + 16);
        a2 = _mm512_add_pd(a2, low_doubles(v1));
        a3 = _mm512_add_pd(a3, high_doubles(v1));
      }
      if (m2) {
        const __m512 v2 = _mm512_maskz_loadu_ps(m2, row + 32);
        a4 = _mm512_add_pd(a4, low_doubles(v2));
        a5 = _mm512_add_pd(a5, high_doubles(v2));
      }
      if (m3) {
        const __m512 v3 = _mm512_maskz_loadu_ps(m3, row + 48);
        a6 = _mm512_add_pd(a6, low_doubles(v3));
        a7 = _mm512_add_pd(a7, high_doubles(v3));
      }
    }
    // Masked stores: nothing is written past `width`.
    const __m512d sums[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int h = 0; h < 8; ++h) {
      const int64_t left = w - 8 * h;
      if (left <= 0) break;
      const __mmask8 m = left >= 8 ? __mmask8(0xFF) : static_cast<__mmask8>((1u << left) - 1u);
      _mm512_mask_storeu_pd(out + c0 + 8 * h, m, sums[h]);
    }
  }
}

}  // namespace bam::cpu
