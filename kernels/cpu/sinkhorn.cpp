// Sinkhorn balancing on the CPU (see sinkhorn.h): K once, then the scaling vectors, rows and
// column blocks split over the worker threads.
#include "kernels/cpu/sinkhorn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {

template <typename T>
void sinkhorn_balance(const T* s, T* out, const SinkhornShape& shape) {
  const int64_t R = shape.rows, C = shape.columns, B = shape.batch;
  const T inv_eps = T(1.0 / shape.eps);
  auto masked = [&](int64_t i, int64_t j) { return shape.positive_masking && j % B == i % B; };
  std::vector<T> column_max(static_cast<size_t>(C), -std::numeric_limits<T>::infinity());
  parallel_for(C, 64, [&](int64_t begin, int64_t end) {  // columns: each chunk walks every row
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = begin; j < end; ++j)
        if (!masked(i, j)) column_max[j] = std::max(column_max[j], s[i * C + j] * inv_eps);
  });
  std::vector<double> k(static_cast<size_t>(R * C));
  parallel_for(R, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t j = 0; j < C; ++j)
        k[i * C + j] = masked(i, j) ? 0.0 : std::exp(double(s[i * C + j] * inv_eps - column_max[j]));
  });
  const double top = *std::max_element(column_max.begin(), column_max.end());
  std::vector<double> x(static_cast<size_t>(C)), y(static_cast<size_t>(R), 1.0);
  for (int64_t j = 0; j < C; ++j) x[j] = std::exp(double(column_max[j]) - top);
  for (int64_t it = 0; it < shape.iterations; ++it) {
    parallel_for(C, 64, [&](int64_t begin, int64_t end) {  // columns: each chunk walks every row
      std::vector<double> sums(static_cast<size_t>(end - begin), 0.0);
      for (int64_t i = 0; i < R; ++i)
        for (int64_t j = begin; j < end; ++j) sums[j - begin] += k[i * C + j] * y[i];
      for (int64_t j = begin; j < end; ++j) x[j] = shape.column_mass / sums[j - begin];
    });
    parallel_for(R, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < C; ++j) sum += k[i * C + j] * x[j];
        y[i] = shape.row_mass / sum;
      }
    });
  }
  parallel_for(shape.out_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < C; ++j) sum += k[i * C + j] * x[j];
      for (int64_t j = 0; j < C; ++j) out[i * C + j] = T(k[i * C + j] * x[j] / sum);
    }
  });
}

template void sinkhorn_balance<float>(const float*, float*, const SinkhornShape&);
template void sinkhorn_balance<double>(const double*, double*, const SinkhornShape&);

}  // namespace bam::cpu
