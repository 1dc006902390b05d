// The f32 GELU's sixteen-lane pieces, shared by the AVX-512 files: the GELU loops
// (gelu_avx512.cpp) and the AMX GEMM, which applies GELU to an operand while it packs it
// (gemm_amx.cpp), so that both give the same bits. Only for files compiled with -mavx512f -mfma.
// `static`, as in exp_avx512.h: each including file keeps its own copy (tests/check_avx2_objects.sh).
// Results agree with the portable loop of gelu.cpp to a few f32 ulps (FMA contraction, the
// polynomial exp, the reciprocal); tests/test_ops.cpp holds them to it.
#pragma once

#include "kernels/cpu/exp_avx512.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/x86_intrinsics.h"

// Phi(x) and phi(x) for sixteen values, as gaussian_cdf_pdf in gelu.cpp.
static inline void gelu_cdf_pdf_avx512(__m512 x, __m512* cdf, __m512* pdf) {
  using namespace bam::cpu::gelu_detail;  // the constants
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

// gelu(x) = x Phi(x) for sixteen values.
static inline __m512 gelu_avx512(__m512 x) {
  __m512 cdf, pdf;
  gelu_cdf_pdf_avx512(x, &cdf, &pdf);
  return _mm512_mul_ps(x, cdf);
}
