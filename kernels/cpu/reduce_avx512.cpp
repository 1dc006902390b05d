// AVX-512 column sums for the f32 sum reduction (reduce.cpp): the same double accumulation, each
// column's rows in order, with the accumulators of 64 columns held in eight zmm registers instead
// of an array in memory. Compiled with -mavx512f; reduce.cpp calls in here only after
// cpu_has_avx512().
#include <cstdint>

#include "kernels/cpu/reduce.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu {

void column_sums_f32_avx512(const float* x, int64_t rows, int64_t ld, int64_t width, double* out) {
  for (int64_t c0 = 0; c0 < width; c0 += 64) {
    const int64_t w = width - c0;
    // Four groups of 16 columns, each two registers of 8 doubles.
    __mmask16 mask[4];
    __m512d sums[8];
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) mask[g] = first_lanes16(w - 16 * g);
#pragma GCC unroll 8
    for (int h = 0; h < 8; ++h) sums[h] = _mm512_setzero_pd();
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * ld + c0;
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        if (mask[g]) {
          const __m512 v = load16(row + 16 * g, mask[g]);
          sums[2 * g] = _mm512_add_pd(sums[2 * g], low_doubles(v));
          sums[2 * g + 1] = _mm512_add_pd(sums[2 * g + 1], high_doubles(v));
        }
      }
    }
    // Masked stores: nothing is written past `width`. (The loops over the groups are unrolled so
    // that the accumulators stay in registers.)
#pragma GCC unroll 8
    for (int h = 0; h < 8; ++h) {
      const int64_t left = w - 8 * h;
      if (left > 0) {
        const __mmask8 m = left >= 8 ? __mmask8(0xFF) : static_cast<__mmask8>((1u << left) - 1u);
        store8d(out + c0 + 8 * h, m, sums[h]);
      }
    }
  }
}

}  // namespace bam::cpu
