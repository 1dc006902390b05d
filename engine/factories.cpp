// Tensor factories: empty/zeros/ones/full, ranges, host data, and random draws from Philox.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/parallel.h"
#ifdef BAM_WITH_CUDA
#include "engine/cuda.h"
#include "kernels/cuda/copy.h"
#endif

namespace bam {

Generator& default_generator() {
  static Generator generator(0);
  return generator;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

Tensor empty(const Shape& shape, TensorOptions options) {
  for (int64_t s : shape) BAM_CHECK(s >= 0, "empty: negative size in shape {}", shape_str(shape));
  BAM_CHECK(shape.size() <= 16, "tensors have at most 16 dims, got shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  size_t nbytes = 0;
  BAM_CHECK(!__builtin_mul_overflow(static_cast<size_t>(shape_numel(shape)), dtype_size(options.dtype), &nbytes),
            "empty: shape {} of {} is too large to allocate", shape_str(shape), dtype_name(options.dtype));
  impl->storage = std::make_shared<Storage>(nbytes, options.device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = options.dtype;
  Tensor t(impl);
  if (options.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor full(const Shape& shape, double value, TensorOptions options) {
  bool wants_grad = options.requires_grad;
  options.requires_grad = false;
  Tensor t = empty(shape, options);
  if (options.device.is_cpu()) {
    cpu::fill(t.raw_data(), options.dtype, t.numel(), value);
  } else {
#ifdef BAM_WITH_CUDA
    cuda_kernels::fill(t.raw_data(), options.dtype, t.numel(), value, cuda::current_stream());
#else
    fail("full: cannot fill a tensor on {}: this build has no CUDA backend", options.device.str());
#endif
  }
  if (wants_grad) t.requires_grad_(true);
  return t;
}

Tensor zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }
Tensor ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), {t.dtype(), t.device()}); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {t.dtype(), t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {t.dtype(), t.device()}); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, {t.dtype(), t.device()}); }
Tensor scalar_tensor(double value, TensorOptions options) { return full({}, value, options); }

namespace {

// Builds a tensor on the CPU from f64 values computed by `value(i)`, then moves it to the device.
template <typename ValueFn>
Tensor from_function(const Shape& shape, TensorOptions options, ValueFn value) {
  Tensor host = empty(shape, {DType::f64, Device::cpu()});
  double* p = host.data<double>();
  int64_t n = host.numel();
  cpu::parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) p[i] = value(i);
  });
  NoGradGuard no_grad;
  Tensor out = host.to(options.dtype).to(options.device);
  if (options.requires_grad) out.requires_grad_(true);
  return out;
}

template <typename T>
Tensor from_host_values(const std::vector<T>& values, DType source_dtype, const Shape& shape, TensorOptions options) {
  BAM_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor host = empty(shape, {source_dtype, Device::cpu()});
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  NoGradGuard no_grad;
  Tensor out = host.to(options.dtype).to(options.device);
  if (out.same(host)) out = host;
  if (options.requires_grad) out.requires_grad_(true);
  return out;
}

}  // namespace

Tensor arange(double start, double end, double step, TensorOptions options) {
  BAM_CHECK(step != 0, "arange: step must not be 0");
  double count = std::ceil((end - start) / step);
  int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  return from_function({n}, options, [&](int64_t i) { return start + static_cast<double>(i) * step; });
}

Tensor arange(int64_t end, TensorOptions options) { return arange(0.0, static_cast<double>(end), 1.0, options); }

Tensor from_vector(const std::vector<float>& values, const Shape& shape, TensorOptions options) {
  return from_host_values(values, DType::f32, shape, options);
}
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions options) {
  return from_host_values(values, DType::f64, shape, options);
}
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape, TensorOptions options) {
  return from_host_values(values, DType::i64, shape, options);
}

Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  impl->storage = std::make_shared<Storage>(data, nbytes, device, nullptr);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

// ---- random -------------------------------------------------------------------------------------

namespace {
Generator& pick(Generator* gen) { return gen ? *gen : default_generator(); }
}  // namespace

Tensor rand(const Shape& shape, TensorOptions options, Generator* gen) {
  Generator& g = pick(gen);
  int64_t n = shape_numel(shape);
  uint64_t start = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  PhiloxKey key = g.key();
  return from_function(shape, options, [&](int64_t i) {
    return static_cast<double>(uniform_from_bits(philox_block(key, start + i / 4).w[i % 4]));
  });
}

Tensor randn(const Shape& shape, TensorOptions options, Generator* gen) {
  Generator& g = pick(gen);
  int64_t n = shape_numel(shape);
  uint64_t start = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  PhiloxKey key = g.key();
  return from_function(shape, options, [&](int64_t i) {
    PhiloxBlock block = philox_block(key, start + i / 4);
    int pair = (i % 4) / 2;
    float z0, z1;
    normal_pair(block.w[2 * pair], block.w[2 * pair + 1], &z0, &z1);
    return static_cast<double>(i % 2 == 0 ? z0 : z1);
  });
}

double erfinv(double y) {
  if (y <= -1.0) return -INFINITY;
  if (y >= 1.0) return INFINITY;
  // Giles' single-precision approximation ("Approximating the erfinv function", 2010) as a start.
  double w = -std::log((1.0 - y) * (1.0 + y));
  double x;
  if (w < 5.0) {
    w -= 2.5;
    double p = 2.81022636e-08;
    p = 3.43273939e-07 + p * w;
    p = -3.5233877e-06 + p * w;
    p = -4.39150654e-06 + p * w;
    p = 0.00021858087 + p * w;
    p = -0.00125372503 + p * w;
    p = -0.00417768164 + p * w;
    p = 0.246640727 + p * w;
    p = 1.50140941 + p * w;
    x = p * y;
  } else {
    w = std::sqrt(w) - 3.0;
    double p = -0.000200214257;
    p = 0.000100950558 + p * w;
    p = 0.00134934322 + p * w;
    p = -0.00367342844 + p * w;
    p = 0.00573950773 + p * w;
    p = -0.0076224613 + p * w;
    p = 0.00943887047 + p * w;
    p = 1.00167406 + p * w;
    p = 2.83297682 + p * w;
    x = p * y;
  }
  // Two Newton steps on erf(x) - y bring it to double precision.
  for (int i = 0; i < 2; ++i) {
    double err = std::erf(x) - y;
    x -= err / (1.1283791670955126 * std::exp(-x * x));
  }
  return x;
}

Tensor trunc_normal(const Shape& shape, double mean, double std, double low, double high, TensorOptions options,
                    Generator* gen) {
  BAM_CHECK(low < high && std > 0, "trunc_normal: need low < high and std > 0 (got [{}, {}], std {})", low, high,
            std);
  // Inverse-CDF sampling: uniform between the CDF values of the bounds, mapped through erfinv.
  auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  double lo = 2.0 * cdf((low - mean) / std) - 1.0, hi = 2.0 * cdf((high - mean) / std) - 1.0;
  Generator& g = pick(gen);
  int64_t n = shape_numel(shape);
  uint64_t start = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  PhiloxKey key = g.key();
  return from_function(shape, options, [&](int64_t i) {
    double u = uniform_from_bits(philox_block(key, start + i / 4).w[i % 4]);
    double v = erfinv(lo + (hi - lo) * u) * std * std::sqrt(2.0) + mean;
    return std::clamp(v, low, high);
  });
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions options, Generator* gen) {
  BAM_CHECK(high > low && high - low <= (int64_t(1) << 32), "randint: need low < high with a range up to 2^32 (got [{}, {}))",
            low, high);
  Generator& g = pick(gen);
  int64_t n = shape_numel(shape);
  uint64_t start = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  PhiloxKey key = g.key();
  uint64_t range = static_cast<uint64_t>(high - low);
  return from_function(shape, options, [&](int64_t i) {
    uint64_t bits = philox_block(key, start + i / 4).w[i % 4];
    return static_cast<double>(low + static_cast<int64_t>((bits * range) >> 32));
  });
}

Tensor randperm(int64_t n, Generator* gen) {
  Generator& g = pick(gen);
  uint64_t start = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  PhiloxKey key = g.key();
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  // Fisher-Yates from the top; draw i uses counter word i.
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t bits = philox_block(key, start + i / 4).w[i % 4];
    int64_t j = static_cast<int64_t>((bits * static_cast<uint64_t>(i + 1)) >> 32);
    std::swap(perm[i], perm[j]);
  }
  return from_vector(perm, {n});
}

}  // namespace bam
