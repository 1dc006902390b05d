// Optimizer kernels: single fused passes over each parameter tensor.
#include "kernels/cpu/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {
namespace {
constexpr int64_t kGrain = 32768;
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, double lr, double beta1, double beta2,
                  double eps, double weight_decay, int64_t step) {
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const float decay = static_cast<float>(1.0 - lr * weight_decay);
  const float step_size = static_cast<float>(lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2), e = static_cast<float>(eps);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float gi = g[i];
      float mi = b1 * m[i] + (1.0f - b1) * gi;
      float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bias2 + e);
    }
  });
}

void sgd_update(float* p, const float* g, float* buf, int64_t n, double lr, double momentum, double weight_decay,
                bool first_step) {
  const float mu = static_cast<float>(momentum), wd = static_cast<float>(weight_decay), rate = static_cast<float>(lr);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float d = g[i] + wd * p[i];
      float b = first_step ? d : mu * buf[i] + d;
      buf[i] = b;
      p[i] -= rate * b;
    }
  });
}

void lars_update(float* p, const float* g, float* buf, int64_t n, bool adapt, double lr, double momentum,
                 double weight_decay, double eta) {
  double trust = 1.0;
  const float wd = adapt ? static_cast<float>(weight_decay) : 0.0f;
  if (adapt) {
    double p_norm = std::sqrt(sum_of_squares(p, n));
    double d_sq = 0;
    for (int64_t i = 0; i < n; ++i) {
      double d = static_cast<double>(g[i]) + wd * static_cast<double>(p[i]);
      d_sq += d * d;
    }
    double d_norm = std::sqrt(d_sq);
    if (p_norm > 0 && d_norm > 0) trust = eta * p_norm / d_norm;
  }
  const float q = static_cast<float>(trust), mu = static_cast<float>(momentum), rate = static_cast<float>(lr);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float d = (g[i] + wd * p[i]) * q;
      buf[i] = mu * buf[i] + d;
      p[i] -= rate * buf[i];
    }
  });
}

double sum_of_squares(const float* x, int64_t n) {
  const int tasks = std::max<int>(1, std::min<int64_t>(num_threads(), (n + kGrain - 1) / kGrain));
  std::vector<double> partial(tasks, 0.0);
  parallel_tasks(tasks, [&](int t) {
    int64_t begin = n * t / tasks, end = n * (t + 1) / tasks;
    double acc = 0;
    for (int64_t i = begin; i < end; ++i) acc += static_cast<double>(x[i]) * x[i];
    partial[t] = acc;
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

void scale_in_place(float* x, int64_t n, float scale) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) x[i] *= scale;
  });
}

void ema_update(float* ema, const float* x, int64_t n, double momentum) {
  const float m = static_cast<float>(momentum), one_minus = static_cast<float>(1.0 - momentum);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) ema[i] = m * ema[i] + one_minus * x[i];
  });
}

}  // namespace bam::cpu
