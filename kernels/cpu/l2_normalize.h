// Row-wise L2 normalisation of [rows, cols]: y = x / max(||x||, eps), and its backward.
#pragma once

#include <cstdint>

namespace bam::cpu {

// norms[r] = ||x_r|| (saved for backward).
template <typename T>
void l2_normalize_forward(const T* x, T* y, T* norms, int64_t rows, int64_t cols, double eps);

// Where ||x|| > eps: dx = (dy - y * <dy, y>) / ||x||; elsewhere the divisor was the constant eps:
// dx = dy / eps.
template <typename T>
void l2_normalize_backward(const T* y, const T* norms, const T* dy, T* dx, int64_t rows, int64_t cols, double eps);

}  // namespace bam::cpu
