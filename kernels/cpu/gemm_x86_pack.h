// Packing helpers shared by the x86 GEMM micro-kernels (gemm_avx2.cpp, gemm_avx512.cpp): an 8 x 8
// in-register transpose (AVX), the scalar packing of a partial micro-panel, the transposing copy
// of a transposed B and the loop that cuts a block into micro-panels. Everything here has
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

// A full micro-panel of WIDTH lanes (a multiple of 8) whose lanes are `ld` apart and contiguous
// along k (the columns of a transposed B): WIDTH / 8 transposes of 8 x 8 per 8 k-steps. The
// panel's k steps are WIDTH floats apart from a 32-byte aligned start, so the stores are aligned.
template <int WIDTH>
void pack_transposing(const float* src, int64_t ld, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    for (int group = 0; group < WIDTH / 8; ++group) {
      __m256 row[8];
      for (int j = 0; j < 8; ++j) row[j] = _mm256_loadu_ps(src + (group * 8 + j) * ld + k);
      transpose_8x8(row);
      for (int j = 0; j < 8; ++j) _mm256_store_ps(dst + (k + j) * WIDTH + group * 8, row[j]);
    }
  }
  for (; k < kc; ++k) {
    for (int j = 0; j < WIDTH; ++j) dst[k * WIDTH + j] = src[j * ld + k];
  }
}

// Packs `lanes` x kc into micro-panels of WIDTH lanes (the contract of MicroKernelF32::pack_a
// and pack_b). With `strided_lanes`, lane i starts at src + i * ld and runs contiguously along k
// (a row-major A, a transposed B); otherwise lane i is src[i] and each k step is `ld` further on
// (a transposed A, a row-major B). Full panels go through the instruction set's own copies,
// STRIDED or CONTIGUOUS, the partial last one through pack_edge.
template <int WIDTH, void (*STRIDED)(const float*, int64_t, int64_t, float*),
          void (*CONTIGUOUS)(const float*, int64_t, int64_t, float*)>
void pack_panels(bool strided_lanes, const float* src, int64_t ld, int64_t lanes, int64_t kc, float* dst) {
  const int64_t full_panels = lanes / WIDTH;
  for (int64_t p = 0; p < full_panels; ++p) {
    float* to = dst + p * WIDTH * kc;
    if (strided_lanes) {
      STRIDED(src + p * WIDTH * ld, ld, kc, to);
    } else {
      CONTIGUOUS(src + p * WIDTH, ld, kc, to);
    }
  }
  const int64_t edge_lanes = lanes - full_panels * WIDTH;
  if (edge_lanes > 0) {
    const int64_t l0 = full_panels * WIDTH;
    pack_edge(strided_lanes ? src + l0 * ld : src + l0, strided_lanes ? ld : 1, strided_lanes ? 1 : ld, edge_lanes, kc,
              WIDTH, dst + l0 * kc);
  }
}

}  // namespace
}  // namespace bam::cpu::gemm_detail
