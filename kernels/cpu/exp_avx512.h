// exp(a) for a <= 0, sixteen lanes at a time: the polynomial the AVX-512 files share (the softmax
// of attention_avx512.cpp, the density of gelu_avx512.cpp); gelu_avx2.cpp holds its eight-lane
// form. Only for files compiled with -mavx512f -mfma. `static` gives each including file its own
// copy, compiled for its own instruction set: an inline function would be a weak symbol that the
// linker could keep for the whole program (tests/check_avx2_objects.sh).
#pragma once

#include "kernels/cpu/x86_intrinsics.h"

// a = n ln2 + r with |r| <= ln2 / 2; e^r from a degree-6 polynomial (Cephes' expf coefficients,
// relative error about 1e-7); 2^n through the exponent bits. Below -87.3, just above where e^a
// becomes subnormal (-87.34), the result is 0. A NaN argument stays NaN (max and min return their second operand
// when one is NaN, and the comparison is false).
static inline __m512 exp_nonpositive_avx512(__m512 a) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(a, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  a = _mm512_min_ps(_mm512_set1_ps(0.0f), _mm512_max_ps(_mm512_set1_ps(-87.3f), a));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = a - n ln2, with ln2 split in two so that n * ln2_hi is exact.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), a);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_mul_ps(p, _mm512_castsi512_ps(bits)));
}
