// <immintrin.h> for the *_avx512.cpp and *_amx.cpp files. GCC 12's AVX-512 headers build the
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
