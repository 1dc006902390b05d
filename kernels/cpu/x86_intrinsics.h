// <immintrin.h> for the *_avx512.cpp, *_avx512bf16.cpp and *_amx.cpp files, and their shared
// lane-mask and widening helpers. GCC 12's AVX-512 headers build the "undefined" source of some unmasked intrinsics
// (shuffles, conversions, 256-bit casts) as `__m512 x = x;`, which -Wuninitialized and
// -Wmaybe-uninitialized report wherever they are inlined (a known header issue; the value is never
// read). The warnings are silenced for the including file, which holds only intrinsic code.
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

// The low / high 8 floats of v, widened to double (for sums kept in double).
static inline __m512d low_doubles(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline __m512d high_doubles(__m512 v) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xEE)));
}
