// Packing helpers shared by the x86 GEMM micro-kernels (gemm_avx2.cpp, gemm_avx512.cpp): an 8 x 8
// in-register transpose (AVX) and the scalar packing of a partial micro-panel. Everything here has
// internal linkage, so each of those files compiles its own copy with its own instruction set and
// no copy can be shared with code that runs without the CPU check (tests/check_avx2_objects.sh).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace bam::cpu::gemm_detail {
namespace {

// In-register transpose: on return row[j] holds element j of every input row (8 x 8 floats).
inline void transpose_8x8(__m256 row[8]) {
  __m256 pair[8], quad[8];
  for (int i = 0; i < 8; i += 2) {
    pair[i] = _mm256_unpacklo_ps(row[i], row[i + 1]);
    pair[i + 1] = _mm256_unpackhi_ps(row[i], row[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    quad[i + 0] = _mm256_shuffle_ps(pair[i], pair[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    quad[i + 1] = _mm256_shuffle_ps(pair[i], pair[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    quad[i + 2] = _mm256_shuffle_ps(pair[i + 1], pair[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    quad[i + 3] = _mm256_shuffle_ps(pair[i + 1], pair[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    row[i] = _mm256_permute2f128_ps(quad[i], quad[i + 4], 0x20);
    row[i + 4] = _mm256_permute2f128_ps(quad[i], quad[i + 4], 0x31);
  }
}

// Scalar packing of a partial micro-panel (fewer than `width` rows/columns), zero-padded.
// Lane i at step k is src[i * lane_stride + k * k_stride].
inline void pack_edge(const float* src, int64_t lane_stride, int64_t k_stride, int64_t lanes, int64_t kc, int width,
                      float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    float* to = dst + k * width;
    const float* from = src + k * k_stride;
    for (int64_t i = 0; i < lanes; ++i) to[i] = from[i * lane_stride];
    for (int64_t i = lanes; i < width; ++i) to[i] = 0.0f;
  }
}

}  // namespace
}  // namespace bam::cpu::gemm_detail
