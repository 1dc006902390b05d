// The f32 GELU eight lanes at a time with AVX2/FMA: the portable loop of gelu.cpp, with exp(-x^2/2)
// from a polynomial instead of a libm call (which kept the loop scalar). Compiled with -mavx2
// -mfma; gelu.cpp only calls in here after checking the CPU. Results agree with the portable loop
// to a few f32 ulps (FMA contraction and the polynomial exp); the tests hold them to it. No
// standard-library templates or inline functions here: a copy compiled with AVX2 could be the one
// the linker keeps for the whole program (the ctest avx2_objects_self_contained checks).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/gelu.h"

namespace bam::cpu::gelu_detail {
namespace {

// exp(a) for a <= 0 (the only arguments here): a = n ln2 + r with |r| <= ln2 / 2, e^r from a
// degree-6 polynomial (Cephes' expf coefficients, relative error about 1e-7), 2^n through the
// exponent bits. Below -87.3, just above where e^a becomes subnormal (-87.34), it is 0 (libm gives a subnormal
// down to -103.9, which vanishes against the other terms; an infinite x then gives the portable
// loop's inf * 0 = NaN gradient too). A NaN argument stays NaN: max/min return their second
// operand when one is NaN, and the comparison is false.
inline __m256 exp_nonpositive(__m256 a) {
  const __m256 underflow = _mm256_cmp_ps(a, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  a = _mm256_min_ps(_mm256_set1_ps(0.0f), _mm256_max_ps(_mm256_set1_ps(-87.3f), a));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = a - n ln2, with ln2 split in two so that n * ln2_hi is exact.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), a);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

// Phi(x) and phi(x) for eight values, as gaussian_cdf_pdf in gelu.cpp.
inline void gaussian_cdf_pdf(__m256 x, __m256* cdf, __m256* pdf) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign_bit, x), _mm256_set1_ps(kSqrtHalf));
  const __m256 e = exp_nonpositive(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), x), x));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(kP), z, one));
  __m256 poly = _mm256_set1_ps(kA5);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA4));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA3));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA2));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA1));
  poly = _mm256_mul_ps(poly, t);
  const __m256 erf_abs = _mm256_fnmadd_ps(poly, e, one);
  // x < 0 takes -erf_abs (as the portable loop, so that -0 counts as positive).
  const __m256 negative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 erf = _mm256_blendv_ps(erf_abs, _mm256_xor_ps(erf_abs, sign_bit), negative);
  *cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(one, erf));
  *pdf = _mm256_mul_ps(_mm256_set1_ps(kInvSqrt2Pi), e);
}

// The last n % 8 values through a zero-padded vector, so that every value takes the same path.
inline __m256 load_tail(const float* p, int64_t count) {
  alignas(32) float buffer[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < count; ++i) buffer[i] = p[i];
  return _mm256_load_ps(buffer);
}
inline void store_tail(float* p, __m256 v, int64_t count) {
  alignas(32) float buffer[8];
  _mm256_store_ps(buffer, v);
  for (int64_t i = 0; i < count; ++i) p[i] = buffer[i];
}

}  // namespace

void forward_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 cdf, pdf;
    gaussian_cdf_pdf(v, &cdf, &pdf);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(v, cdf));
  }
  if (i < n) {
    const __m256 v = load_tail(x + i, n - i);
    __m256 cdf, pdf;
    gaussian_cdf_pdf(v, &cdf, &pdf);
    store_tail(y + i, _mm256_mul_ps(v, cdf), n - i);
  }
}

void backward_avx2(const float* x, const float* dy, float* dx, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 cdf, pdf;
    gaussian_cdf_pdf(v, &cdf, &pdf);
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_fmadd_ps(v, pdf, cdf)));
  }
  if (i < n) {
    const __m256 v = load_tail(x + i, n - i);
    __m256 cdf, pdf;
    gaussian_cdf_pdf(v, &cdf, &pdf);
    store_tail(dx + i, _mm256_mul_ps(load_tail(dy + i, n - i), _mm256_fmadd_ps(v, pdf, cdf)), n - i);
  }
}

}  // namespace bam::cpu::gelu_detail
