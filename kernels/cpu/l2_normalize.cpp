// L2 normalisation kernels (the first step of the BAM loss: cosine similarities).
#include "kernels/cpu/l2_normalize.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {

template <typename T>
void l2_normalize_forward(const T* x, T* y, T* norms, int64_t rows, int64_t cols, double eps) {
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * cols;
      double ss = 0;
      for (int64_t j = 0; j < cols; ++j) ss += double(xr[j]) * xr[j];
      double norm = std::sqrt(ss);
      norms[r] = static_cast<T>(norm);
      // The branch the backward takes from the stored norm (the CUDA twin compares it the same way).
      T inv = static_cast<T>(1.0 / (static_cast<double>(norms[r]) <= eps ? eps : norm));
      for (int64_t j = 0; j < cols; ++j) y[r * cols + j] = xr[j] * inv;
    }
  });
}

template <typename T>
void l2_normalize_backward(const T* y, const T* norms, const T* dy, T* dx, int64_t rows, int64_t cols, double eps) {
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* yr = y + r * cols;
      const T* gr = dy + r * cols;
      T* dr = dx + r * cols;
      if (static_cast<double>(norms[r]) <= eps) {
        for (int64_t j = 0; j < cols; ++j) dr[j] = static_cast<T>(gr[j] / eps);
        continue;
      }
      double dot = 0;
      for (int64_t j = 0; j < cols; ++j) dot += double(gr[j]) * yr[j];
      T d = static_cast<T>(dot), inv = T(1) / norms[r];
      for (int64_t j = 0; j < cols; ++j) dr[j] = (gr[j] - yr[j] * d) * inv;
    }
  });
}

template void l2_normalize_forward<float>(const float*, float*, float*, int64_t, int64_t, double);
template void l2_normalize_forward<double>(const double*, double*, double*, int64_t, int64_t, double);
template void l2_normalize_backward<float>(const float*, const float*, const float*, float*, int64_t, int64_t, double);
template void l2_normalize_backward<double>(const double*, const double*, const double*, double*, int64_t, int64_t,
                                            double);

}  // namespace bam::cpu
