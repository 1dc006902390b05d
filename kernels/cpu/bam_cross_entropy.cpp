// The fused BAM cross-entropy on the CPU, row by row (see bam_cross_entropy.h), in the input's
// precision; rows are independent and split over the worker threads.
#include "kernels/cpu/bam_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {

template <typename T>
void bam_cross_entropy(const T* s, const T* p, T* row_loss, T* d_s, const BamCrossEntropyShape& shape) {
  const int64_t V = shape.views, G = shape.globals, B = shape.batch, C = shape.columns;
  // Both constants are formed in double and rounded once, as the CUDA kernel receives them.
  const T inv_tau = T(1.0 / shape.temperature);
  const int64_t CB = shape.column_batch > 0 ? shape.column_batch : B, first = shape.first_image;
  const T scale = T(1.0 / (double(G) * double(V > 1 ? V - 1 : 1) * double(CB)));
  parallel_for(V * B, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> w(static_cast<size_t>(C));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t view = i / B, b = i % B;
      const T* row = s + i * C;
      auto masked = [&](int64_t j) { return shape.positive_masking && j % CB == first + b; };
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < C; ++j)
        if (!masked(j)) m = std::max(m, row[j] * inv_tau);
      T sum_exp = 0;
      for (int64_t j = 0; j < C; ++j)
        if (!masked(j)) sum_exp += std::exp(row[j] * inv_tau - m);
      const T lse = m + std::log(sum_exp);
      // W: the other target views' rows for image b.
      for (int64_t j = 0; j < C; ++j) w[j] = 0;
      for (int64_t t = 0; t < G; ++t) {
        if (V > 1 && t == view) continue;
        const T* target = p + (t * B + b) * C;
        for (int64_t j = 0; j < C; ++j) w[j] += target[j];
      }
      T loss = 0, sum_w = 0;
      for (int64_t j = 0; j < C; ++j)
        if (!masked(j)) {
          loss += w[j] * (row[j] * inv_tau - lse);
          sum_w += w[j];
        }
      row_loss[i] = -scale * loss;
      if (!d_s) continue;
      T* grad = d_s + i * C;
      for (int64_t j = 0; j < C; ++j)
        grad[j] = masked(j) ? T(0) : -scale * (w[j] - std::exp(row[j] * inv_tau - lse) * sum_w) * inv_tau;
    }
  });
}

template void bam_cross_entropy<float>(const float*, const float*, float*, float*, const BamCrossEntropyShape&);
template void bam_cross_entropy<double>(const double*, const double*, double*, double*, const BamCrossEntropyShape&);

}  // namespace bam::cpu
