// <immintrin.h> for the *_avx512.cpp and *_amx.cpp files, and their shared lane-mask helper. GCC 12's AVX-512 headers build the
// "undefined" source of some unmasked intrinsics (shuffles, conversions, 256-bit casts) as
// `__m512 x = x;`, which -Wuninitialized and -Wmaybe-uninitialized report wherever they are
// inlined (a known header issue; the value is never read). The warnings are silenced for the
// including file, which holds only intrinsic code.
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
