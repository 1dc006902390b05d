// The f32 GELU sixteen lanes at a time with AVX-512: gelu_avx2.cpp's loop at twice the width, with
// masked loads and stores for the last n % 16 values, and a reciprocal estimate refined by a
// Newton step in place of the division. Compiled with -mavx512f -mfma; gelu.cpp only calls in here
// after cpu_has_avx512(). Results agree with the portable loop to a few f32 ulps (FMA contraction,
// the polynomial exp of exp_avx512.h, the reciprocal); tests/test_ops.cpp holds them to it. No
// standard-library templates or inline functions from headers here (tests/check_avx2_objects.sh).
#include <cstdint>

#include "kernels/cpu/exp_avx512.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gelu_detail {
namespace {

// Phi(x) and phi(x) for sixteen values, as gaussian_cdf_pdf in gelu.cpp.
inline void gaussian_cdf_pdf(__m512 x, __m512* cdf, __m512* pdf) {
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(kSqrtHalf));
  const __m512 e = exp_nonpositive_avx512(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-0.5f), x), x));
  const __m512 one = _mm512_set1_ps(1.0f);
  // t = 1 / (1 + p z) from the reciprocal estimate (relative error 2^-14) and one Newton step
  // (error about 2^-23): the division was the loop's slowest instruction. The denominator is held
  // below 1e30 so that an infinite x does not make the step inf * 0 (t is 0 to f32 there anyway);
  // a NaN passes (min returns its second operand when one is NaN).
  const __m512 denominator = _mm512_min_ps(_mm512_set1_ps(1e30f), _mm512_fmadd_ps(_mm512_set1_ps(kP), z, one));
  __m512 t = _mm512_rcp14_ps(denominator);
  t = _mm512_fmadd_ps(t, _mm512_fnmadd_ps(denominator, t, one), t);
  __m512 poly = _mm512_set1_ps(kA5);
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA4));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA3));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA2));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(kA1));
  poly = _mm512_mul_ps(poly, t);
  const __m512 erf_abs = _mm512_fnmadd_ps(poly, e, one);
  // x < 0 takes -erf_abs (as the portable loop, so that -0 counts as positive).
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512i erf_bits = _mm512_castps_si512(erf_abs);
  const __m512 erf = _mm512_castsi512_ps(
      _mm512_mask_xor_epi32(erf_bits, negative, erf_bits, _mm512_set1_epi32(static_cast<int>(0x80000000u))));
  *cdf = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_add_ps(one, erf));
  *pdf = _mm512_mul_ps(_mm512_set1_ps(kInvSqrt2Pi), e);
}

}  // namespace

void forward_avx512(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes16(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(lanes, x + i);
    __m512 cdf, pdf;
    gaussian_cdf_pdf(v, &cdf, &pdf);
    _mm512_mask_storeu_ps(y + i, lanes, _mm512_mul_ps(v, cdf));
  }
}

void backward_avx512(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes16(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(lanes, x + i);
    __m512 cdf, pdf;
    gaussian_cdf_pdf(v, &cdf, &pdf);
    const __m512 slope = _mm512_fmadd_ps(v, pdf, cdf);
    _mm512_mask_storeu_ps(dx + i, lanes, _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, dy + i), slope));
  }
}

}  // namespace bam::cpu::gelu_detail
