// LayerNorm kernels. Statistics in double per row (two passes: mean, then centred variance);
// parameter gradients are summed per thread and combined at the end (so their last bits depend on
// the thread count; the outputs and dx do not). Row sums run eight accumulators side by side, in a
// fixed order: one chain of dependent double additions made the statistics the slow part.
// These loops are the specification of the f32 AVX-512 twins (layer_norm_avx512.cpp), which
// give the same bits; both files are compiled with -ffp-contract=off so that neither fuses a
// multiply into an add.
#include "kernels/cpu/layer_norm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/parallel.h"

namespace bam::cpu {
namespace {

std::atomic<bool> g_force_portable{false};

// Whether T's rows go to the AVX-512 twins.
template <typename T>
bool use_avx512_twin() {
  return std::is_same_v<T, float> && !g_force_portable.load(std::memory_order_relaxed) && cpu_has_avx512();
}

// sum over j in [0, n) of term(j), in double: eight interleaved partial sums (j mod 8), combined
// pairwise. Independent chains let the compiler use vector additions.
template <typename Term>
inline double row_sum(int64_t n, Term term) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += term(j + k);
  }
  for (; j < n; ++j) acc[j % 8] += term(j);
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

}  // namespace

template <typename T>
void layer_norm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd, int64_t rows,
                        int64_t cols, double eps) {
  [[maybe_unused]] const bool twin = use_avx512_twin<T>();
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      if (twin) {
        layer_norm_detail::forward_rows_f32_avx512(x, weight, bias, y, mean, rstd, begin, end, cols, eps);
        return;
      }
    }
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      const double m = row_sum(cols, [xr](int64_t j) { return double(xr[j]); }) / static_cast<double>(cols);
      const double v = row_sum(cols,
                               [xr, m](int64_t j) {
                                 const double d = xr[j] - m;
                                 return d * d;
                               }) /
                       static_cast<double>(cols);
      const T mu = static_cast<T>(m);
      const T rs = static_cast<T>(1.0 / std::sqrt(v + eps));
      mean[r] = mu;
      rstd[r] = rs;
      for (int64_t j = 0; j < cols; ++j) {
        T h = (xr[j] - mu) * rs;
        if (weight) h *= weight[j];
        if (bias) h += bias[j];
        yr[j] = h;
      }
    }
  });
}

template <typename T>
void layer_norm_backward(const T* x, const T* weight, const T* mean, const T* rstd, const T* dy, T* dx,
                         T* d_weight, T* d_bias, int64_t rows, int64_t cols) {
  const int tasks = std::max(1, std::min<int>(num_threads(), static_cast<int>(rows)));
  const bool want_params = d_weight || d_bias;
  std::vector<double> partial(want_params ? static_cast<size_t>(tasks) * 2 * cols : 0, 0.0);
  [[maybe_unused]] const bool twin = use_avx512_twin<T>();
  parallel_tasks(tasks, [&](int task) {
    int64_t begin = rows * task / tasks, end = rows * (task + 1) / tasks;
    double* pw = want_params ? partial.data() + static_cast<size_t>(task) * 2 * cols : nullptr;
    double* pb = want_params ? pw + cols : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (twin) {
        layer_norm_detail::backward_rows_f32_avx512(x, weight, mean, rstd, dy, dx, pw, pb, begin, end, cols);
        return;
      }
    }
    // This row's g = dy * weight and xhat = (x - mean) * rstd, each computed once.
    std::vector<T> g(static_cast<size_t>(cols)), xhat(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * cols;
      const T* gr = dy + r * cols;
      const T mu = mean[r], rs = rstd[r];
      // With xhat = (x - mu) rstd and g = dy * weight:
      // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
      for (int64_t j = 0; j < cols; ++j) xhat[j] = (xr[j] - mu) * rs;
      if (weight) {
        for (int64_t j = 0; j < cols; ++j) g[j] = gr[j] * weight[j];
      } else {
        std::copy(gr, gr + cols, g.begin());
      }
      if (want_params) {
        for (int64_t j = 0; j < cols; ++j) {
          pw[j] += double(gr[j]) * xhat[j];
          pb[j] += gr[j];
        }
      }
      if (dx) {
        const double sum_g = row_sum(cols, [&](int64_t j) { return double(g[j]); });
        const double sum_g_xhat = row_sum(cols, [&](int64_t j) { return double(g[j]) * xhat[j]; });
        T* dr = dx + r * cols;
        const T mean_g = static_cast<T>(sum_g / cols), mean_gx = static_cast<T>(sum_g_xhat / cols);
        for (int64_t j = 0; j < cols; ++j) dr[j] = rs * (g[j] - mean_g - xhat[j] * mean_gx);
      }
    }
  });
  if (!want_params) return;
  for (int64_t j = 0; j < cols; ++j) {
    double w = 0, b = 0;
    for (int t = 0; t < tasks; ++t) {
      w += partial[static_cast<size_t>(t) * 2 * cols + j];
      b += partial[static_cast<size_t>(t) * 2 * cols + cols + j];
    }
    if (d_weight) d_weight[j] = static_cast<T>(w);
    if (d_bias) d_bias[j] = static_cast<T>(b);
  }
}

bool layer_norm_force_kernel(const char* name) {
  if (!name || std::strcmp(name, "auto") == 0) {
    g_force_portable.store(false, std::memory_order_relaxed);
    return true;
  }
  if (std::strcmp(name, "portable") == 0) {
    g_force_portable.store(true, std::memory_order_relaxed);
    return true;
  }
  return false;
}

const char* layer_norm_kernel_name() { return use_avx512_twin<float>() ? "avx512" : "portable"; }

template void layer_norm_forward<float>(const float*, const float*, const float*, float*, float*, float*, int64_t,
                                        int64_t, double);
template void layer_norm_forward<double>(const double*, const double*, const double*, double*, double*, double*,
                                         int64_t, int64_t, double);
template void layer_norm_backward<float>(const float*, const float*, const float*, const float*, const float*,
                                         float*, float*, float*, int64_t, int64_t);
template void layer_norm_backward<double>(const double*, const double*, const double*, const double*,
                                          const double*, double*, double*, double*, int64_t, int64_t);

}  // namespace bam::cpu
