// BatchNorm kernels: partial sums over fixed slices of N, combined per channel in double, in order.
#include "kernels/cpu/batch_norm.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {
namespace {

// Runs `body(n_begin, n_end, sums)` on slices of N; each slice gets `width` zeroed doubles per
// channel; returns the per-channel totals (C * width values). The slices are fixed runs of rows,
// added in order, so that the sums have the same bits on any number of threads.
constexpr int64_t kRowsPerSlice = 64;

template <typename Body>
std::vector<double> channel_sums(int64_t N, int64_t C, int width, Body body) {
  const int tasks = static_cast<int>(std::max<int64_t>(1, (N + kRowsPerSlice - 1) / kRowsPerSlice));
  std::vector<double> partial(static_cast<size_t>(tasks) * C * width, 0.0);
  parallel_tasks(tasks, [&](int task) {
    body(std::min(N, task * kRowsPerSlice), std::min(N, (task + 1) * kRowsPerSlice),
         partial.data() + static_cast<size_t>(task) * C * width);
  });
  std::vector<double> total(static_cast<size_t>(C) * width, 0.0);
  for (int t = 0; t < tasks; ++t)
    for (size_t i = 0; i < total.size(); ++i) total[i] += partial[static_cast<size_t>(t) * C * width + i];
  return total;
}

}  // namespace

template <typename T>
void batch_norm_stats(const T* x, T* mean, T* var, int64_t N, int64_t C, int64_t L) {
  const double count = static_cast<double>(N * L);
  auto sums = channel_sums(N, C, 1, [&](int64_t n0, int64_t n1, double* s) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const T* p = x + (n * C + c) * L;
        for (int64_t l = 0; l < L; ++l) s[c] += p[l];
      }
  });
  for (int64_t c = 0; c < C; ++c) sums[c] /= count;
  // Centred second pass: avoids the cancellation of E[x^2] - E[x]^2.
  auto squares = channel_sums(N, C, 1, [&](int64_t n0, int64_t n1, double* s) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const T* p = x + (n * C + c) * L;
        for (int64_t l = 0; l < L; ++l) s[c] += (p[l] - sums[c]) * (p[l] - sums[c]);
      }
  });
  for (int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<T>(sums[c]);
    var[c] = static_cast<T>(squares[c] / count);
  }
}

template <typename T>
void batch_norm_apply(const T* x, const T* mean, const T* rstd, const T* weight, const T* bias, T* y, int64_t N,
                      int64_t C, int64_t L) {
  parallel_for(N * C, std::max<int64_t>(1, 8192 / std::max<int64_t>(L, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      int64_t c = nc % C;
      T scale = rstd[c] * (weight ? weight[c] : T(1));
      T shift = (bias ? bias[c] : T(0)) - mean[c] * scale;
      const T* p = x + nc * L;
      T* q = y + nc * L;
      for (int64_t l = 0; l < L; ++l) q[l] = p[l] * scale + shift;
    }
  });
}

template <typename T>
void batch_norm_backward(const T* x, const T* mean, const T* rstd, const T* weight, const T* dy, T* dx,
                         T* d_weight, T* d_bias, int64_t N, int64_t C, int64_t L, bool batch_statistics) {
  // sums[2c] = sum(dy), sums[2c+1] = sum(dy * xhat) per channel.
  auto sums = channel_sums(N, C, 2, [&](int64_t n0, int64_t n1, double* s) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const T* p = x + (n * C + c) * L;
        const T* g = dy + (n * C + c) * L;
        for (int64_t l = 0; l < L; ++l) {
          s[2 * c] += g[l];
          s[2 * c + 1] += double(g[l]) * ((p[l] - mean[c]) * rstd[c]);
        }
      }
  });
  for (int64_t c = 0; c < C; ++c) {
    if (d_bias) d_bias[c] = static_cast<T>(sums[2 * c]);
    if (d_weight) d_weight[c] = static_cast<T>(sums[2 * c + 1]);
  }
  if (!dx) return;
  const double count = static_cast<double>(N * L);
  parallel_for(N * C, std::max<int64_t>(1, 8192 / std::max<int64_t>(L, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      int64_t c = nc % C;
      const T* p = x + nc * L;
      const T* g = dy + nc * L;
      T* d = dx + nc * L;
      T scale = rstd[c] * (weight ? weight[c] : T(1));
      if (!batch_statistics) {
        for (int64_t l = 0; l < L; ++l) d[l] = g[l] * scale;
        continue;
      }
      // dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat))
      T mean_g = static_cast<T>(sums[2 * c] / count), mean_gx = static_cast<T>(sums[2 * c + 1] / count);
      for (int64_t l = 0; l < L; ++l) {
        T xhat = (p[l] - mean[c]) * rstd[c];
        d[l] = scale * (g[l] - mean_g - xhat * mean_gx);
      }
    }
  });
}

#define BAM_INSTANTIATE(T)                                                                                     \
  template void batch_norm_stats<T>(const T*, T*, T*, int64_t, int64_t, int64_t);                              \
  template void batch_norm_apply<T>(const T*, const T*, const T*, const T*, const T*, T*, int64_t, int64_t,    \
                                    int64_t);                                                                  \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, int64_t,  \
                                       int64_t, int64_t, bool);
BAM_INSTANTIATE(float)
BAM_INSTANTIATE(double)

}  // namespace bam::cpu
