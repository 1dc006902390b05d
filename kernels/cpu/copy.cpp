// Copy/convert/fill: a template over (source type, destination type) driven by StridedLoop.
#include "kernels/cpu/copy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"

namespace bam::cpu {
namespace {

// Element values as arithmetic types: 16-bit floats convert through f32.
template <typename T>
inline double to_double(T v) {
  if constexpr (std::is_same_v<T, bf16_t>) return bf16_bits_to_float(v.bits);
  else if constexpr (std::is_same_v<T, f16_t>) return f16_bits_to_float(v.bits);
  else return static_cast<double>(v);
}

template <typename Dst, typename Src>
inline Dst convert_value(Src v) {
  if constexpr (std::is_same_v<Dst, Src>) {
    return v;
  } else if constexpr (std::is_same_v<Dst, bf16_t>) {
    return bf16_t{float_to_bf16_bits(static_cast<float>(to_double(v)))};
  } else if constexpr (std::is_same_v<Dst, f16_t>) {
    return f16_t{float_to_f16_bits(static_cast<float>(to_double(v)))};
  } else if constexpr (std::is_same_v<Dst, bool>) {
    return to_double(v) != 0.0;
  } else if constexpr (std::is_same_v<Src, bf16_t> || std::is_same_v<Src, f16_t>) {
    return convert_value<Dst>(static_cast<float>(to_double(v)));
  } else if constexpr (std::is_integral_v<Dst> && std::is_floating_point_v<Src>) {
    // NaN and out-of-range values would be undefined behaviour in a plain cast.
    if (std::isnan(v)) return Dst(0);
    double t = std::trunc(static_cast<double>(v));
    if (t <= static_cast<double>(std::numeric_limits<Dst>::lowest())) return std::numeric_limits<Dst>::lowest();
    if (t >= static_cast<double>(std::numeric_limits<Dst>::max())) return std::numeric_limits<Dst>::max();
    return static_cast<Dst>(t);
  } else {
    return static_cast<Dst>(v);
  }
}

template <typename Fn>
void dispatch_type(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); break;
    case DType::f64: fn(double{}); break;
    case DType::bf16: fn(bf16_t{}); break;
    case DType::f16: fn(f16_t{}); break;
    case DType::i32: fn(int32_t{}); break;
    case DType::i64: fn(int64_t{}); break;
    case DType::u8: fn(uint8_t{}); break;
    case DType::boolean: fn(bool{}); break;
  }
}

template <typename Src, typename Dst>
void copy_loop(const Src* src, Dst* dst, const StridedLoop<2>& loop) {
  int64_t rows = loop.rows(), inner = loop.inner();
  int64_t ss = loop.inner_stride(0), ds = loop.inner_stride(1);
  int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(inner, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    int64_t offsets[2];
    for (int64_t r = begin; r < end; ++r) {
      loop.row_offsets(r, offsets);
      const Src* s = src + offsets[0];
      Dst* d = dst + offsets[1];
      if (ss == 1 && ds == 1) {
        if constexpr (std::is_same_v<Src, Dst>) {
          std::memcpy(d, s, inner * sizeof(Src));
        } else {
          for (int64_t i = 0; i < inner; ++i) d[i] = convert_value<Dst>(s[i]);
        }
      } else {
        for (int64_t i = 0; i < inner; ++i) d[i * ds] = convert_value<Dst>(s[i * ss]);
      }
    }
  });
}

}  // namespace

void copy_strided(const void* src, DType src_dtype, const int64_t* src_strides, void* dst,
                  DType dst_dtype, const int64_t* dst_strides, const int64_t* shape, int ndim) {
  for (int d = 0; d < ndim; ++d)
    if (shape[d] == 0) return;
  auto loop = make_strided_loop<2>(shape, ndim, {src_strides, dst_strides});
  dispatch_type(src_dtype, [&](auto src_tag) {
    using Src = decltype(src_tag);
    dispatch_type(dst_dtype, [&](auto dst_tag) {
      using Dst = decltype(dst_tag);
      copy_loop(static_cast<const Src*>(src), static_cast<Dst*>(dst), loop);
    });
  });
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  int64_t stride = 1;
  copy_strided(src, src_dtype, &stride, dst, dst_dtype, &stride, &n, 1);
}

void fill(void* dst, DType dtype, int64_t n, double value) {
  dispatch_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    T v = convert_value<T>(value);
    T* d = static_cast<T*>(dst);
    parallel_for(n, 65536, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) d[i] = v;
    });
  });
}

double read_as_double(const void* data, DType dtype, int64_t i) {
  double out = 0;
  dispatch_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    out = to_double(static_cast<const T*>(data)[i]);
  });
  return out;
}

}  // namespace bam::cpu
