// Elementwise kernels: unary maps with their derivatives, broadcasting binary ops, comparisons, where.
// Float kernels are instantiated for float and double; comparisons and where for all numeric types.
#pragma once

#include <cstdint>

namespace bam::cpu {

enum class UnaryOp {
  neg, exp, log, sqrt, rsqrt, abs, square, pow, clamp, tanh, erf, sigmoid, relu, gelu_erf, gelu_tanh,
  add_scalar, mul_scalar, rsub_scalar, rdiv_scalar
};
// Parameters of the parametric maps: pow (a = exponent), clamp ([a, b]), add/mul/rsub/rdiv (a).
struct UnaryArgs {
  double a = 0.0;
  double b = 0.0;
};

// y[i] = f(x[i]) for n contiguous elements.
template <typename T>
void unary_forward(UnaryOp op, const T* x, T* y, int64_t n, UnaryArgs args);
// dx[i] = dy[i] * f'(x[i]); y = f(x) is passed because some derivatives are cheaper from it.
template <typename T>
void unary_backward(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n, UnaryArgs args);

enum class BinaryOp { add, sub, mul, div, maximum, minimum };
// out = op(a, b) over `shape`; out is contiguous, a and b have element strides (0 where broadcast).
template <typename T>
void binary_forward(BinaryOp op, const T* a, const int64_t* a_strides, const T* b, const int64_t* b_strides,
                    T* out, const int64_t* shape, int ndim);

enum class CompareOp { eq, ne, lt, le, gt, ge };
// out (bool, contiguous) = a <op> b, broadcasting like binary_forward.
template <typename T>
void compare(CompareOp op, const T* a, const int64_t* a_strides, const T* b, const int64_t* b_strides, bool* out,
             const int64_t* shape, int ndim);

// out (contiguous) = cond ? a : b, each input with its own strides.
template <typename T>
void where(const bool* cond, const int64_t* cond_strides, const T* a, const int64_t* a_strides, const T* b,
           const int64_t* b_strides, T* out, const int64_t* shape, int ndim);

}  // namespace bam::cpu
