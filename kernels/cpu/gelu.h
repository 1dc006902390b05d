// GELU in its exact (erf) form for f32, forward and backward over a contiguous range: the
// portable specification, and an AVX2/FMA twin (gelu_avx2.cpp) used when the CPU has both. GELU is
// the ViT's MLP activation; a libm exp per element kept the loop scalar and made it a fifth of a
// small model's CPU step.
//   gelu(x) = x * Phi(x),  gelu'(x) = Phi(x) + x * phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
// erf comes from Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7, below f32 rounding near
// 1), which shares exp(-x^2/2) with the density phi.
#pragma once

#include <cstdint>

namespace bam::cpu {

// allow_avx2 = false forces the portable loop (tests compare the two).
void gelu_erf_forward_f32(const float* x, float* y, int64_t n, bool allow_avx2 = true);
// dx = dy * gelu'(x)
void gelu_erf_backward_f32(const float* x, const float* dy, float* dx, int64_t n, bool allow_avx2 = true);

namespace gelu_detail {
// The AVX2/FMA loops (gelu_avx2.cpp); only to be called when the CPU supports them.
void forward_avx2(const float* x, float* y, int64_t n);
void backward_avx2(const float* x, const float* dy, float* dx, int64_t n);
}  // namespace gelu_detail

}  // namespace bam::cpu
