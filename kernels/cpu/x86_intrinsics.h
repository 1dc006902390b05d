// <immintrin.h> for the *_avx512.cpp, *_avx512bf16.cpp and *_amx.cpp files, and their shared
// lane-mask, masked load/store and widening helpers. GCC 12's AVX-512 headers build the
// "undefined" source of some unmasked intrinsics (shuffles, conversions, 256-bit casts) as
// `__m512 x = x;`, which -Wuninitialized and -Wmaybe-uninitialized report wherever they are inlined
// (a known header issue; the value is never read). The warnings are silenced for the including
// file, which holds only intrinsic code.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

// The mask of the first `count` of 16 lanes: none for count <= 0, all from 16 on. (static: each
// including file keeps its own copy, compiled for its own instruction set.)
static inline __mmask16 first_lanes16(int64_t count) {
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << count) - 1u);
}

// Masked loads and stores that take the plain instruction when every lane is asked for: AMD's
// Zen 5 ran a masked load of memory not yet in cache at half the speed of a plain one (the GELU
// loop over 17 MB: 3.8 against 1.8 ms; in cache they cost the same), so a loop's full vectors must
// not pay for its tail's mask. The lanes outside the mask are zero (loads) or left alone (stores),
// and no memory outside them is touched, as with the masked instructions.
static inline __m512 load16(const float* p, __mmask16 lanes) {
  return lanes == __mmask16(0xFFFF) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes, p);
}
static inline void store16(float* p, __mmask16 lanes, __m512 v) {
  lanes == __mmask16(0xFFFF) ? _mm512_storeu_ps(p, v) : _mm512_mask_storeu_ps(p, lanes, v);
}
static inline __m512d load8d(const double* p, __mmask8 lanes) {
  return lanes == __mmask8(0xFF) ? _mm512_loadu_pd(p) : _mm512_maskz_loadu_pd(lanes, p);
}
static inline void store8d(double* p, __mmask8 lanes, __m512d v) {
  lanes == __mmask8(0xFF) ? _mm512_storeu_pd(p, v) : _mm512_mask_storeu_pd(p, lanes, v);
}

// The low / high 8 floats of v, widened to double (for sums kept in double).
static inline __m512d low_doubles(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d high_doubles(__m512 v) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xEE)));
}
