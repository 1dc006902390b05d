// GELU in its exact (erf) form for f32, forward and backward over a contiguous range: the
// portable specification, and its AVX-512 and AVX2/FMA twins (gelu_avx512.cpp, gelu_avx2.cpp), the
// widest the CPU has being used. GELU is
// the ViT's MLP activation; a libm exp per element kept the loop scalar and made it a fifth of a
// small model's CPU step.
//   gelu(x) = x * Phi(x),  gelu'(x) = Phi(x) + x * phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
// erf comes from Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7, below f32 rounding near
// 1), which shares exp(-x^2/2) with the density phi.
#pragma once

#include <cstdint>

namespace bam::cpu {

// Which loop runs: the widest the CPU has, at most AVX2/FMA, or the portable one (the tests
// compare each twin with the portable loop).
enum class GeluLoop { widest, at_most_avx2, portable };
// The loop `limit` gives on this CPU: "avx512", "avx2" or "portable".
const char* gelu_loop_name(GeluLoop limit = GeluLoop::widest);

void gelu_erf_forward_f32(const float* x, float* y, int64_t n, GeluLoop limit = GeluLoop::widest);
// dx = dy * gelu'(x)
void gelu_erf_backward_f32(const float* x, const float* dy, float* dx, int64_t n, GeluLoop limit = GeluLoop::widest);

namespace gelu_detail {
// The constants the loops use (internal linkage: no shared symbol between the portable and vector
// objects): sqrt(1/2), 1/sqrt(2 pi), and A&S 7.1.26's p and a1..a5.
constexpr float kSqrtHalf = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kP = 0.3275911f;
constexpr float kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f, kA4 = -1.453152027f,
                kA5 = 1.061405429f;

// The AVX2/FMA and AVX-512 loops (gelu_avx2.cpp, gelu_avx512.cpp); only to be called when the CPU
// supports them.
void forward_avx2(const float* x, float* y, int64_t n);
void backward_avx2(const float* x, const float* dy, float* dx, int64_t n);
void forward_avx512(const float* x, float* y, int64_t n);
void backward_avx512(const float* x, const float* dy, float* dx, int64_t n);
}  // namespace gelu_detail

}  // namespace bam::cpu
