// The f32 GELU sixteen lanes at a time with AVX-512: gelu_avx2.cpp's loop at twice the width, with
// masked loads and stores for the last n % 16 values, and a reciprocal estimate refined by a
// Newton step in place of the division (the pieces are in gelu_avx512.h, which the AMX GEMM shares).
// Compiled with -mavx512f -mfma; gelu.cpp only calls in here after cpu_has_avx512(). Results agree
// with the portable loop to a few f32 ulps; tests/test_ops.cpp holds them to it. No standard-library
// templates or inline functions from headers here (tests/check_avx2_objects.sh).
#include "kernels/cpu/gelu_avx512.h"

#include <cstdint>

#include "kernels/cpu/gelu.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gelu_detail {

void forward_avx512(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes16(n - i);
    const __m512 v = load16(x + i, lanes);
    store16(y + i, lanes, gelu_avx512(v));
  }
}

void backward_avx512(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes16(n - i);
    const __m512 v = load16(x + i, lanes);
    __m512 cdf, pdf;
    gelu_cdf_pdf_avx512(v, &cdf, &pdf);
    const __m512 slope = _mm512_fmadd_ps(v, pdf, cdf);
    store16(dx + i, lanes, _mm512_mul_ps(load16(dy + i, lanes), slope));
  }
}

}  // namespace bam::cpu::gelu_detail
