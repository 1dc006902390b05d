// Elementwise CPU kernels. Each op is a small lambda applied by a parallel loop; the switch over
// ops sits outside the loop so the inner loops stay simple (and vectorise where the math allows).
#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <type_traits>

#include "kernels/cpu/gelu.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"

namespace bam::cpu {
namespace {

constexpr int64_t kGrain = 16384;
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;

// GELU's Gaussian CDF and density at x, in f64 (the gradient checks' precision). f32 GELU has its
// own kernels (gelu.h: A&S erf sharing one exponential with the density, and an AVX2 twin).
inline void gaussian_cdf_pdf(double x, double* cdf, double* pdf) {
  *cdf = 0.5 * (1.0 + std::erf(x * kSqrtHalf));
  *pdf = kInvSqrt2Pi * std::exp(-0.5 * x * x);
}

template <typename T, typename F>
void map1(const T* x, T* y, int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
  });
}

// dx = dy * g(x, y)
template <typename T, typename G>
void map_grad(const T* x, const T* y, const T* dy, T* dx, int64_t n, G g) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dx[i] = dy[i] * g(x ? x[i] : T(0), y ? y[i] : T(0));
  });
}

// Row-major strides of a dense output of `shape`; returns its element count.
int64_t dense_strides(const int64_t* shape, int ndim, int64_t* strides) {
  int64_t stride = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return stride;
}

// Walks a broadcast layout of (a, b, out) rows; `row` gets pointers and inner strides.
template <typename TA, typename TB, typename TO, typename RowFn>
void broadcast_rows(const TA* a, const int64_t* a_strides, const TB* b, const int64_t* b_strides, TO* out,
                    const int64_t* shape, int ndim, RowFn row) {
  int64_t out_strides[kMaxDims];
  if (dense_strides(shape, ndim, out_strides) == 0) return;
  auto loop = make_strided_loop<3>(shape, ndim, {a_strides, b_strides, out_strides});
  int64_t inner = loop.inner();
  int64_t sa = loop.inner_stride(0), sb = loop.inner_stride(1);
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1));
  parallel_for(loop.rows(), grain, [&](int64_t begin, int64_t end) {
    int64_t off[3];
    for (int64_t r = begin; r < end; ++r) {
      loop.row_offsets(r, off);
      row(a + off[0], sa, b + off[1], sb, out + off[2], inner);
    }
  });
}

template <typename T, typename F>
void binary_map(const T* a, const int64_t* as, const T* b, const int64_t* bs, T* out, const int64_t* shape, int ndim,
                F f) {
  broadcast_rows(a, as, b, bs, out, shape, ndim,
                 [&](const T* pa, int64_t sa, const T* pb, int64_t sb, T* po, int64_t n) {
                   if (sa == 1 && sb == 1) {
                     for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
                   } else if (sa == 1 && sb == 0) {
                     T vb = pb[0];
                     for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], vb);
                   } else if (sa == 0 && sb == 1) {
                     T va = pa[0];
                     for (int64_t i = 0; i < n; ++i) po[i] = f(va, pb[i]);
                   } else {
                     for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i * sa], pb[i * sb]);
                   }
                 });
}

}  // namespace

template <typename T>
void unary_forward(UnaryOp op, const T* x, T* y, int64_t n, UnaryArgs args) {
  const T a = static_cast<T>(args.a), b = static_cast<T>(args.b);
  switch (op) {
    case UnaryOp::neg: return map1(x, y, n, [](T v) { return -v; });
    case UnaryOp::exp: return map1(x, y, n, [](T v) { return std::exp(v); });
    case UnaryOp::log: return map1(x, y, n, [](T v) { return std::log(v); });
    case UnaryOp::sqrt: return map1(x, y, n, [](T v) { return std::sqrt(v); });
    case UnaryOp::rsqrt: return map1(x, y, n, [](T v) { return T(1) / std::sqrt(v); });
    case UnaryOp::abs: return map1(x, y, n, [](T v) { return std::abs(v); });
    case UnaryOp::square: return map1(x, y, n, [](T v) { return v * v; });
    case UnaryOp::pow: return map1(x, y, n, [a](T v) { return std::pow(v, a); });
    case UnaryOp::clamp:
      // NaN stays NaN (comparisons with NaN are false), as in PyTorch.
      return map1(x, y, n, [a, b](T v) { return v < a ? a : (v > b ? b : v); });
    case UnaryOp::tanh: return map1(x, y, n, [](T v) { return std::tanh(v); });
    case UnaryOp::erf: return map1(x, y, n, [](T v) { return std::erf(v); });
    case UnaryOp::sigmoid: return map1(x, y, n, [](T v) { return T(1) / (T(1) + std::exp(-v)); });
    case UnaryOp::relu: return map1(x, y, n, [](T v) { return v > T(0) ? v : T(0); });
    case UnaryOp::gelu_erf:
      if constexpr (std::is_same_v<T, float>) {
        return parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
          gelu_erf_forward_f32(x + begin, y + begin, end - begin);
        });
      } else {
        return map1(x, y, n, [](T v) {
          T cdf, pdf;
          gaussian_cdf_pdf(v, &cdf, &pdf);
          return v * cdf;
        });
      }
    case UnaryOp::gelu_tanh:
      return map1(x, y, n, [](T v) {
        return T(0.5) * v * (T(1) + std::tanh(T(kSqrt2OverPi) * (v + T(kGeluCubic) * v * v * v)));
      });
    case UnaryOp::add_scalar: return map1(x, y, n, [a](T v) { return v + a; });
    case UnaryOp::mul_scalar: return map1(x, y, n, [a](T v) { return v * a; });
    case UnaryOp::rsub_scalar: return map1(x, y, n, [a](T v) { return a - v; });
    case UnaryOp::rdiv_scalar: return map1(x, y, n, [a](T v) { return a / v; });
  }
}

template <typename T>
void unary_backward(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n, UnaryArgs args) {
  const T a = static_cast<T>(args.a), b = static_cast<T>(args.b);
  switch (op) {
    case UnaryOp::neg: return map_grad(x, y, dy, dx, n, [](T, T) { return T(-1); });
    case UnaryOp::exp: return map_grad(x, y, dy, dx, n, [](T, T out) { return out; });
    case UnaryOp::log: return map_grad(x, y, dy, dx, n, [](T in, T) { return T(1) / in; });
    case UnaryOp::sqrt: return map_grad(x, y, dy, dx, n, [](T, T out) { return T(0.5) / out; });
    case UnaryOp::rsqrt: return map_grad(x, y, dy, dx, n, [](T, T out) { return T(-0.5) * out * out * out; });
    case UnaryOp::abs:
      return map_grad(x, y, dy, dx, n, [](T in, T) { return in > T(0) ? T(1) : (in < T(0) ? T(-1) : T(0)); });
    case UnaryOp::square: return map_grad(x, y, dy, dx, n, [](T in, T) { return T(2) * in; });
    case UnaryOp::pow:
      return map_grad(x, y, dy, dx, n, [a](T in, T) { return a == T(0) ? T(0) : a * std::pow(in, a - T(1)); });
    case UnaryOp::clamp:
      return map_grad(x, y, dy, dx, n, [a, b](T in, T) { return (in >= a && in <= b) ? T(1) : T(0); });
    case UnaryOp::tanh: return map_grad(x, y, dy, dx, n, [](T, T out) { return T(1) - out * out; });
    case UnaryOp::erf:
      return map_grad(x, y, dy, dx, n, [](T in, T) { return T(kTwoOverSqrtPi) * std::exp(-in * in); });
    case UnaryOp::sigmoid: return map_grad(x, y, dy, dx, n, [](T, T out) { return out * (T(1) - out); });
    case UnaryOp::relu: return map_grad(x, y, dy, dx, n, [](T in, T) { return in > T(0) ? T(1) : T(0); });
    case UnaryOp::gelu_erf:
      if constexpr (std::is_same_v<T, float>) {
        return parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
          gelu_erf_backward_f32(x + begin, dy + begin, dx + begin, end - begin);
        });
      } else {
        return map_grad(x, y, dy, dx, n, [](T in, T) {
          T cdf, pdf;
          gaussian_cdf_pdf(in, &cdf, &pdf);
          return cdf + in * pdf;
        });
      }
    case UnaryOp::gelu_tanh:
      return map_grad(x, y, dy, dx, n, [](T in, T) {
        T inner = T(kSqrt2OverPi) * (in + T(kGeluCubic) * in * in * in);
        T t = std::tanh(inner);
        T d_inner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * in * in);
        return T(0.5) * (T(1) + t) + T(0.5) * in * (T(1) - t * t) * d_inner;
      });
    case UnaryOp::add_scalar: return map_grad(x, y, dy, dx, n, [](T, T) { return T(1); });
    case UnaryOp::mul_scalar: return map_grad(x, y, dy, dx, n, [a](T, T) { return a; });
    case UnaryOp::rsub_scalar: return map_grad(x, y, dy, dx, n, [](T, T) { return T(-1); });
    case UnaryOp::rdiv_scalar: return map_grad(x, y, dy, dx, n, [a](T in, T) { return -a / (in * in); });
  }
}

template <typename T>
void binary_forward(BinaryOp op, const T* a, const int64_t* as, const T* b, const int64_t* bs, T* out,
                    const int64_t* shape, int ndim) {
  switch (op) {
    case BinaryOp::add: return binary_map(a, as, b, bs, out, shape, ndim, [](T u, T v) { return u + v; });
    case BinaryOp::sub: return binary_map(a, as, b, bs, out, shape, ndim, [](T u, T v) { return u - v; });
    case BinaryOp::mul: return binary_map(a, as, b, bs, out, shape, ndim, [](T u, T v) { return u * v; });
    case BinaryOp::div: return binary_map(a, as, b, bs, out, shape, ndim, [](T u, T v) { return u / v; });
    case BinaryOp::maximum:
      return binary_map(a, as, b, bs, out, shape, ndim,
                        [](T u, T v) { return (u >= v || std::isnan(u)) ? u : v; });
    case BinaryOp::minimum:
      return binary_map(a, as, b, bs, out, shape, ndim,
                        [](T u, T v) { return (u <= v || std::isnan(u)) ? u : v; });
  }
}

template <typename T>
void compare(CompareOp op, const T* a, const int64_t* as, const T* b, const int64_t* bs, bool* out,
             const int64_t* shape, int ndim) {
  auto run = [&](auto f) {
    broadcast_rows(a, as, b, bs, out, shape, ndim,
                   [&](const T* pa, int64_t sa, const T* pb, int64_t sb, bool* po, int64_t n) {
                     for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i * sa], pb[i * sb]);
                   });
  };
  switch (op) {
    case CompareOp::eq: return run([](T u, T v) { return u == v; });
    case CompareOp::ne: return run([](T u, T v) { return u != v; });
    case CompareOp::lt: return run([](T u, T v) { return u < v; });
    case CompareOp::le: return run([](T u, T v) { return u <= v; });
    case CompareOp::gt: return run([](T u, T v) { return u > v; });
    case CompareOp::ge: return run([](T u, T v) { return u >= v; });
  }
}

template <typename T>
void where(const bool* cond, const int64_t* cs, const T* a, const int64_t* as, const T* b, const int64_t* bs, T* out,
           const int64_t* shape, int ndim) {
  int64_t out_strides[kMaxDims];
  if (dense_strides(shape, ndim, out_strides) == 0) return;
  auto loop = make_strided_loop<4>(shape, ndim, {cs, as, bs, out_strides});
  int64_t inner = loop.inner();
  int64_t sc = loop.inner_stride(0), sa = loop.inner_stride(1), sb = loop.inner_stride(2);
  parallel_for(loop.rows(), std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t begin, int64_t end) {
    int64_t off[4];
    for (int64_t r = begin; r < end; ++r) {
      loop.row_offsets(r, off);
      const bool* pc = cond + off[0];
      const T* pa = a + off[1];
      const T* pb = b + off[2];
      T* po = out + off[3];
      for (int64_t i = 0; i < inner; ++i) po[i] = pc[i * sc] ? pa[i * sa] : pb[i * sb];
    }
  });
}

#define BAM_INSTANTIATE_FLOAT(T)                                                                        \
  template void unary_forward<T>(UnaryOp, const T*, T*, int64_t, UnaryArgs);                             \
  template void unary_backward<T>(UnaryOp, const T*, const T*, const T*, T*, int64_t, UnaryArgs);        \
  template void binary_forward<T>(BinaryOp, const T*, const int64_t*, const T*, const int64_t*, T*,      \
                                  const int64_t*, int);
BAM_INSTANTIATE_FLOAT(float)
BAM_INSTANTIATE_FLOAT(double)

#define BAM_INSTANTIATE_ANY(T)                                                                              \
  template void compare<T>(CompareOp, const T*, const int64_t*, const T*, const int64_t*, bool*, const int64_t*, \
                           int);                                                                            \
  template void where<T>(const bool*, const int64_t*, const T*, const int64_t*, const T*, const int64_t*, T*,     \
                         const int64_t*, int);
BAM_INSTANTIATE_ANY(float)
BAM_INSTANTIATE_ANY(double)
BAM_INSTANTIATE_ANY(int32_t)
BAM_INSTANTIATE_ANY(int64_t)
BAM_INSTANTIATE_ANY(uint8_t)
BAM_INSTANTIATE_ANY(bool)

}  // namespace bam::cpu
