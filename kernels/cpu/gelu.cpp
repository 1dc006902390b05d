// The portable f32 GELU (the specification) and the choice of its AVX-512 or AVX2 twin (gelu.h).
#include "kernels/cpu/gelu.h"

#include <cmath>

#include "kernels/cpu/cpu_features.h"

namespace bam::cpu {
namespace {

using namespace gelu_detail;  // the constants

// Phi(x) and phi(x) from one exponential (gelu.h).
inline void gaussian_cdf_pdf(float x, float* cdf, float* pdf) {
  const float z = std::fabs(x) * kSqrtHalf;
  const float e = std::exp(-0.5f * x * x);
  const float t = 1.0f / (1.0f + kP * z);
  const float poly = t * (kA1 + t * (kA2 + t * (kA3 + t * (kA4 + t * kA5))));
  const float erf_abs = 1.0f - poly * e;
  *cdf = 0.5f * (1.0f + (x < 0 ? -erf_abs : erf_abs));
  *pdf = kInvSqrt2Pi * e;
}

enum class Loop { avx512, avx2, portable };

Loop choose(GeluLoop limit) {
  if (limit == GeluLoop::widest && cpu_has_avx512()) return Loop::avx512;
  if (limit != GeluLoop::portable && cpu_has_avx2_fma()) return Loop::avx2;
  return Loop::portable;
}

}  // namespace

const char* gelu_loop_name(GeluLoop limit) {
  switch (choose(limit)) {
    case Loop::avx512: return "avx512";
    case Loop::avx2: return "avx2";
    case Loop::portable: break;
  }
  return "portable";
}

void gelu_erf_forward_f32(const float* x, float* y, int64_t n, GeluLoop limit) {
  const Loop loop = choose(limit);
  if (loop == Loop::avx512) return gelu_detail::forward_avx512(x, y, n);
  if (loop == Loop::avx2) return gelu_detail::forward_avx2(x, y, n);
  for (int64_t i = 0; i < n; ++i) {
    float cdf, pdf;
    gaussian_cdf_pdf(x[i], &cdf, &pdf);
    y[i] = x[i] * cdf;
  }
}

void gelu_erf_backward_f32(const float* x, const float* dy, float* dx, int64_t n, GeluLoop limit) {
  const Loop loop = choose(limit);
  if (loop == Loop::avx512) return gelu_detail::backward_avx512(x, dy, dx, n);
  if (loop == Loop::avx2) return gelu_detail::backward_avx2(x, dy, dx, n);
  for (int64_t i = 0; i < n; ++i) {
    float cdf, pdf;
    gaussian_cdf_pdf(x[i], &cdf, &pdf);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

}  // namespace bam::cpu
