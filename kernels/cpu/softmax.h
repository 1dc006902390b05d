// Row-wise softmax and log-softmax (over the last of [rows, cols]) and their backward passes.
#pragma once

#include <cstdint>

namespace bam::cpu {

template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);
// dx = y * (dy - sum_j dy_j y_j)
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

template <typename T>
void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);
// dx = dy - exp(y) * sum_j dy_j
template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

}  // namespace bam::cpu
