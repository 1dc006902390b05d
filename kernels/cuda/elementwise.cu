// Elementwise kernels on the GPU, one grid-stride kernel per shape of work (unary, unary
// derivative, broadcasting binary, mixed-dtype add, comparison, where); dense operands move as
// 16-byte packs. The op is a runtime switch inside the kernel (uniform across the grid, so it costs
// no divergence): one instantiation per dtype and pack width, not per op, keeps the build small.
// The formulas are those of kernels/cpu/elementwise.cpp.
#include <cuda/std/limits>

#include "engine/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

using cpu::BinaryOp;
using cpu::CompareOp;
using cpu::UnaryOp;

constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;

template <typename C>
__device__ __forceinline__ C unary_value(UnaryOp op, C v, C a, C b) {
  switch (op) {
    case UnaryOp::neg: return -v;
    case UnaryOp::exp: return exp(v);
    case UnaryOp::log: return log(v);
    case UnaryOp::sqrt: return sqrt(v);
    case UnaryOp::rsqrt: return C(1) / sqrt(v);
    case UnaryOp::abs: return fabs(v);
    case UnaryOp::square: return v * v;
    case UnaryOp::pow: return pow(v, a);
    case UnaryOp::clamp: return v < a ? a : (v > b ? b : v);  // NaN stays NaN
    case UnaryOp::tanh: return tanh(v);
    case UnaryOp::erf: return erf(v);
    case UnaryOp::sigmoid: return C(1) / (C(1) + exp(-v));
    case UnaryOp::relu: return v > C(0) ? v : C(0);
    case UnaryOp::gelu_erf: return v * C(0.5) * (C(1) + erf(v * C(kSqrtHalf)));
    case UnaryOp::gelu_tanh: return C(0.5) * v * (C(1) + tanh(C(kSqrt2OverPi) * (v + C(kGeluCubic) * v * v * v)));
    case UnaryOp::add_scalar: return v + a;
    case UnaryOp::mul_scalar: return v * a;
    case UnaryOp::rsub_scalar: return a - v;
    case UnaryOp::rdiv_scalar: return a / v;
  }
  return v;
}

// f'(x), from the input `in` or the output `out` as the CPU twin does.
template <typename C>
__device__ __forceinline__ C unary_derivative(UnaryOp op, C in, C out, C a, C b) {
  switch (op) {
    case UnaryOp::neg: return C(-1);
    case UnaryOp::exp: return out;
    case UnaryOp::log: return C(1) / in;
    case UnaryOp::sqrt: return C(0.5) / out;
    case UnaryOp::rsqrt: return C(-0.5) * out * out * out;
    case UnaryOp::abs: return in > C(0) ? C(1) : (in < C(0) ? C(-1) : C(0));
    case UnaryOp::square: return C(2) * in;
    case UnaryOp::pow: return a == C(0) ? C(0) : a * pow(in, a - C(1));
    case UnaryOp::clamp: return (in >= a && in <= b) ? C(1) : C(0);
    case UnaryOp::tanh: return C(1) - out * out;
    case UnaryOp::erf: return C(kTwoOverSqrtPi) * exp(-in * in);
    case UnaryOp::sigmoid: return out * (C(1) - out);
    case UnaryOp::relu: return in > C(0) ? C(1) : C(0);
    case UnaryOp::gelu_erf: {
      C cdf = C(0.5) * (C(1) + erf(in * C(kSqrtHalf)));
      C pdf = C(kInvSqrt2Pi) * exp(C(-0.5) * in * in);
      return cdf + in * pdf;
    }
    case UnaryOp::gelu_tanh: {
      C inner = C(kSqrt2OverPi) * (in + C(kGeluCubic) * in * in * in);
      C t = tanh(inner);
      C d_inner = C(kSqrt2OverPi) * (C(1) + C(3 * kGeluCubic) * in * in);
      return C(0.5) * (C(1) + t) + C(0.5) * in * (C(1) - t * t) * d_inner;
    }
    case UnaryOp::add_scalar: return C(1);
    case UnaryOp::mul_scalar: return a;
    case UnaryOp::rsub_scalar: return C(-1);
    case UnaryOp::rdiv_scalar: return -a / (in * in);
  }
  return C(0);
}

// The dense kernels below move K elements per thread as one Pack (numeric.cuh); the elements past
// the last whole pack are taken one at a time. K = 1 is the path for misaligned views.
template <typename S, int K>
__global__ void unary_forward_kernel(UnaryOp op, const S* x, S* y, int64_t n, double a, double b) {
  using N = Num<S>;
  using C = typename N::Compute;
  using P = Pack<S, K>;
  const C ca = C(a), cb = C(b);
  const int64_t packs = n / K;
  for (int64_t p = grid_thread(); p < packs; p += grid_threads()) {
    P in = reinterpret_cast<const P*>(x)[p], out;
#pragma unroll
    for (int k = 0; k < K; ++k) out.v[k] = N::store(unary_value<C>(op, N::load(in.v[k]), ca, cb));
    reinterpret_cast<P*>(y)[p] = out;
  }
  for (int64_t i = packs * K + grid_thread(); i < n; i += grid_threads())
    y[i] = N::store(unary_value<C>(op, N::load(x[i]), ca, cb));
}

template <typename S, int K>
__global__ void unary_backward_kernel(UnaryOp op, const S* x, const S* y, const S* dy, S* dx, int64_t n, double a,
                                      double b) {
  using N = Num<S>;
  using C = typename N::Compute;
  using P = Pack<S, K>;
  const C ca = C(a), cb = C(b);
  const int64_t packs = n / K;
  for (int64_t p = grid_thread(); p < packs; p += grid_threads()) {
    P xin{}, yin{}, g = reinterpret_cast<const P*>(dy)[p], out;
    if (x) xin = reinterpret_cast<const P*>(x)[p];
    if (y) yin = reinterpret_cast<const P*>(y)[p];
#pragma unroll
    for (int k = 0; k < K; ++k)
      out.v[k] = N::store(N::load(g.v[k]) *
                          unary_derivative<C>(op, x ? N::load(xin.v[k]) : C(0), y ? N::load(yin.v[k]) : C(0), ca, cb));
    reinterpret_cast<P*>(dx)[p] = out;
  }
  for (int64_t i = packs * K + grid_thread(); i < n; i += grid_threads()) {
    C in = x ? N::load(x[i]) : C(0);
    C out = y ? N::load(y[i]) : C(0);
    dx[i] = N::store(N::load(dy[i]) * unary_derivative<C>(op, in, out, ca, cb));
  }
}

template <typename C>
__device__ __forceinline__ C binary_value(BinaryOp op, C u, C v) {
  switch (op) {
    case BinaryOp::add: return u + v;
    case BinaryOp::sub: return u - v;
    case BinaryOp::mul: return u * v;
    case BinaryOp::div: return u / v;
    case BinaryOp::maximum: return (u >= v || isnan(u)) ? u : v;
    case BinaryOp::minimum: return (u <= v || isnan(u)) ? u : v;
  }
  return u;
}

// The output is contiguous: its offset is the linear index itself.
template <typename S>
__global__ void binary_kernel(BinaryOp op, const S* a, const S* b, S* out, int64_t n, StridedIndex<2> index) {
  using N = Num<S>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    index.offsets(i, off);
    out[i] = N::store(binary_value(op, N::load(a[off[0]]), N::load(b[off[1]])));
  }
}

// Same-shape contiguous operands: no index arithmetic, K elements per thread.
template <typename S, int K>
__global__ void binary_dense_kernel(BinaryOp op, const S* a, const S* b, S* out, int64_t n) {
  using N = Num<S>;
  using P = Pack<S, K>;
  const int64_t packs = n / K;
  for (int64_t p = grid_thread(); p < packs; p += grid_threads()) {
    P u = reinterpret_cast<const P*>(a)[p], v = reinterpret_cast<const P*>(b)[p], r;
#pragma unroll
    for (int k = 0; k < K; ++k) r.v[k] = N::store(binary_value(op, N::load(u.v[k]), N::load(v.v[k])));
    reinterpret_cast<P*>(out)[p] = r;
  }
  for (int64_t i = packs * K + grid_thread(); i < n; i += grid_threads())
    out[i] = N::store(binary_value(op, N::load(a[i]), N::load(b[i])));
}

// out = a + b with b in another floating dtype B, computed in a's compute type and stored as a's
// dtype: a 16-bit branch added into the f32 residual stream without a cast kernel in between.
template <typename S, typename B, int K>
__global__ void add_mixed_kernel(const S* a, const B* b, S* out, int64_t n) {
  using N = Num<S>;
  using C = typename N::Compute;
  using PS = Pack<S, K>;
  using PB = Pack<B, K>;
  const int64_t packs = n / K;
  for (int64_t p = grid_thread(); p < packs; p += grid_threads()) {
    PS u = reinterpret_cast<const PS*>(a)[p], r;
    PB v = reinterpret_cast<const PB*>(b)[p];
#pragma unroll
    for (int k = 0; k < K; ++k) r.v[k] = N::store(N::load(u.v[k]) + C(Num<B>::load(v.v[k])));
    reinterpret_cast<PS*>(out)[p] = r;
  }
  for (int64_t i = packs * K + grid_thread(); i < n; i += grid_threads())
    out[i] = N::store(N::load(a[i]) + C(Num<B>::load(b[i])));
}

// Comparisons read every dtype through its natural value type.
template <typename S>
__device__ __forceinline__ auto comparable(S v) {
  if constexpr (std::is_same_v<S, __nv_bfloat16> || std::is_same_v<S, __half>)
    return Num<S>::load(v);
  else
    return v;
}

template <typename S>
__global__ void compare_kernel(CompareOp op, const S* a, const S* b, bool* out, int64_t n, StridedIndex<2> index) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    index.offsets(i, off);
    auto u = comparable(a[off[0]]);
    auto v = comparable(b[off[1]]);
    bool r = false;
    switch (op) {
      case CompareOp::eq: r = u == v; break;
      case CompareOp::ne: r = u != v; break;
      case CompareOp::lt: r = u < v; break;
      case CompareOp::le: r = u <= v; break;
      case CompareOp::gt: r = u > v; break;
      case CompareOp::ge: r = u >= v; break;
    }
    out[i] = r;
  }
}

// where moves values without arithmetic: it is instantiated per element size, not per dtype.
template <typename Word>
__global__ void where_kernel(const bool* cond, const Word* a, const Word* b, Word* out, int64_t n,
                             StridedIndex<3> index) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    index.offsets(i, off);
    out[i] = cond[off[0]] ? a[off[1]] : b[off[2]];
  }
}

int64_t numel_of(const int64_t* shape, int ndim) {
  int64_t n = 1;
  for (int k = 0; k < ndim; ++k) n *= shape[k];
  return n;
}

bool is_dense(const int64_t* strides, const int64_t* shape, int ndim) {
  int64_t expected = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    if (shape[k] != 1 && strides[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}

template <typename Fn>
void dispatch_comparable_storage(const char* kernel, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::i32: fn(int32_t{}); return;
    case DType::i64: fn(int64_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
    case DType::boolean: fn(bool{}); return;
    default: dispatch_floating_storage(kernel, dtype, fn);
  }
}

}  // namespace

void unary_forward(UnaryOp op, DType dtype, const void* x, void* y, int64_t n, cpu::UnaryArgs args, void* stream) {
  if (n == 0) return;
  dispatch_floating_storage("unary_forward", dtype, [&](auto tag) {
    using S = decltype(tag);
    constexpr int K = pack_width<S>();
    launch_packed<K>(n, pack_aligned<S, K>(x) && pack_aligned<S, K>(y), [&](auto width, unsigned grid) {
      unary_forward_kernel<S, decltype(width)::value><<<grid, kBlock, 0, as_stream(stream)>>>(
          op, static_cast<const S*>(x), static_cast<S*>(y), n, args.a, args.b);
    });
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void unary_backward(UnaryOp op, DType dtype, const void* x, const void* y, const void* dy, void* dx, int64_t n,
                    cpu::UnaryArgs args, void* stream) {
  if (n == 0) return;
  dispatch_floating_storage("unary_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    constexpr int K = pack_width<S>();
    bool aligned = pack_aligned<S, K>(x) && pack_aligned<S, K>(y) && pack_aligned<S, K>(dy) && pack_aligned<S, K>(dx);
    launch_packed<K>(n, aligned, [&](auto width, unsigned grid) {
      unary_backward_kernel<S, decltype(width)::value><<<grid, kBlock, 0, as_stream(stream)>>>(
          op, static_cast<const S*>(x), static_cast<const S*>(y), static_cast<const S*>(dy), static_cast<S*>(dx), n,
          args.a, args.b);
    });
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void binary_forward(BinaryOp op, DType dtype, const void* a, const int64_t* a_strides, const void* b,
                    const int64_t* b_strides, void* out, const int64_t* shape, int ndim, void* stream) {
  int64_t n = numel_of(shape, ndim);
  if (n == 0) return;
  bool dense = is_dense(a_strides, shape, ndim) && is_dense(b_strides, shape, ndim);
  const int64_t* strides[2] = {a_strides, b_strides};
  StridedIndex<2> index = make_strided_index<2>(shape, ndim, strides);
  dispatch_floating_storage("binary_forward", dtype, [&](auto tag) {
    using S = decltype(tag);
    constexpr int K = pack_width<S>();
    if (dense)
      launch_packed<K>(n, pack_aligned<S, K>(a) && pack_aligned<S, K>(b) && pack_aligned<S, K>(out),
                       [&](auto width, unsigned grid) {
                         binary_dense_kernel<S, decltype(width)::value><<<grid, kBlock, 0, as_stream(stream)>>>(
                             op, static_cast<const S*>(a), static_cast<const S*>(b), static_cast<S*>(out), n);
                       });
    else
      binary_kernel<S><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
          op, static_cast<const S*>(a), static_cast<const S*>(b), static_cast<S*>(out), n, index);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void add_mixed(DType dtype, const void* a, DType b_dtype, const void* b, void* out, int64_t n, void* stream) {
  if (n == 0) return;
  dispatch_floating_storage("add_mixed", dtype, [&](auto a_tag) {
    using S = decltype(a_tag);
    dispatch_floating_storage("add_mixed", b_dtype, [&](auto b_tag) {
      using B = decltype(b_tag);
      constexpr int K = pack_width<S, B>();
      bool aligned = pack_aligned<S, K>(a) && pack_aligned<B, K>(b) && pack_aligned<S, K>(out);
      launch_packed<K>(n, aligned, [&](auto width, unsigned grid) {
        add_mixed_kernel<S, B, decltype(width)::value><<<grid, kBlock, 0, as_stream(stream)>>>(
            static_cast<const S*>(a), static_cast<const B*>(b), static_cast<S*>(out), n);
      });
    });
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void compare(CompareOp op, DType dtype, const void* a, const int64_t* a_strides, const void* b,
             const int64_t* b_strides, bool* out, const int64_t* shape, int ndim, void* stream) {
  int64_t n = numel_of(shape, ndim);
  if (n == 0) return;
  const int64_t* strides[2] = {a_strides, b_strides};
  StridedIndex<2> index = make_strided_index<2>(shape, ndim, strides);
  dispatch_comparable_storage("compare", dtype, [&](auto tag) {
    using S = decltype(tag);
    compare_kernel<S><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(op, static_cast<const S*>(a),
                                                                     static_cast<const S*>(b), out, n, index);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void where(const bool* cond, const int64_t* cond_strides, DType dtype, const void* a, const int64_t* a_strides,
           const void* b, const int64_t* b_strides, void* out, const int64_t* shape, int ndim, void* stream) {
  int64_t n = numel_of(shape, ndim);
  if (n == 0) return;
  const int64_t* strides[3] = {cond_strides, a_strides, b_strides};
  StridedIndex<3> index = make_strided_index<3>(shape, ndim, strides);
  auto launch = [&](auto word) {
    using W = decltype(word);
    where_kernel<W><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
        cond, static_cast<const W*>(a), static_cast<const W*>(b), static_cast<W*>(out), n, index);
  };
  switch (dtype_size(dtype)) {
    case 1: launch(uint8_t{}); break;
    case 2: launch(uint16_t{}); break;
    case 4: launch(uint32_t{}); break;
    case 8: launch(uint64_t{}); break;
    default: fail("where (CUDA): unsupported element size {} of {}", dtype_size(dtype), dtype_name(dtype));
  }
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
