// Softmax kernels: subtract the row max before exp (no overflow), accumulate sums in double.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {
namespace {
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)); }

template <typename T>
T row_max(const T* x, int64_t cols) {
  T m = x[0];
  for (int64_t j = 1; j < cols; ++j) m = x[j] > m ? x[j] : m;
  return m;
}
}  // namespace

template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      T m = row_max(xr, cols);
      double total = 0;
      for (int64_t j = 0; j < cols; ++j) {
        yr[j] = std::exp(xr[j] - m);
        total += yr[j];
      }
      T inv = static_cast<T>(1.0 / total);
      for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
}

template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* yr = y + r * cols;
      const T* gr = dy + r * cols;
      T* dr = dx + r * cols;
      double dot = 0;
      for (int64_t j = 0; j < cols; ++j) dot += double(gr[j]) * yr[j];
      T d = static_cast<T>(dot);
      for (int64_t j = 0; j < cols; ++j) dr[j] = yr[j] * (gr[j] - d);
    }
  });
}

template <typename T>
void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      T m = row_max(xr, cols);
      double total = 0;
      for (int64_t j = 0; j < cols; ++j) total += std::exp(xr[j] - m);
      // (x - m) - log(total), not x - (m + log(total)): near a large m the sum would round away
      // log(total) (at 1e8, where floats are 8 apart, a log 2 of two equal values).
      T log_total = static_cast<T>(std::log(total));
      for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_total;
    }
  });
}

template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* yr = y + r * cols;
      const T* gr = dy + r * cols;
      T* dr = dx + r * cols;
      double total = 0;
      for (int64_t j = 0; j < cols; ++j) total += gr[j];
      T s = static_cast<T>(total);
      for (int64_t j = 0; j < cols; ++j) dr[j] = gr[j] - std::exp(yr[j]) * s;
    }
  });
}

#define BAM_INSTANTIATE(T)                                                           \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                  \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);       \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t);              \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);
BAM_INSTANTIATE(float)
BAM_INSTANTIATE(double)

}  // namespace bam::cpu
