// Strided copy, dtype conversion and fill on the GPU. Dense copies are a memcpy; dense conversions
// between floating types move 16-byte packs. Strided same-dtype copies move raw words; other
// converting copies from a floating type go through double (exact for every floating value), and
// from an integer or bool type through int64, as the CPU's static_cast converts them.
#include <cuda/std/limits>
#include <cuda_runtime.h>

#include "kernels/cpu/copy.h"
#include "engine/cuda_check.h"
#include "kernels/cpu/strided.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

struct Layout {
  int ndim;
  int64_t shape[cpu::kMaxDims];
  int64_t src_strides[cpu::kMaxDims];
  int64_t dst_strides[cpu::kMaxDims];
};

__device__ inline void offsets_of(const Layout& l, int64_t linear, int64_t* src, int64_t* dst) {
  int64_t s = 0, d = 0;
  for (int k = l.ndim - 1; k >= 0; --k) {
    int64_t i = linear % l.shape[k];
    linear /= l.shape[k];
    s += i * l.src_strides[k];
    d += i * l.dst_strides[k];
  }
  *src = s;
  *dst = d;
}

template <typename Word>
__global__ void copy_words(const Word* src, Word* dst, int64_t n, Layout layout) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t s, d;
    offsets_of(layout, i, &s, &d);
    dst[d] = src[s];
  }
}

__device__ inline double load_as_double(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::bf16: return bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::i32: return static_cast<const int32_t*>(p)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
    case DType::boolean: return static_cast<const bool*>(p)[i] ? 1.0 : 0.0;
  }
  return 0.0;
}

template <typename I>
__device__ inline I saturate(double v) {
  if (isnan(v)) return I(0);
  double t = trunc(v);
  if (t <= double(cuda::std::numeric_limits<I>::lowest())) return cuda::std::numeric_limits<I>::lowest();
  if (t >= double(cuda::std::numeric_limits<I>::max())) return cuda::std::numeric_limits<I>::max();
  return static_cast<I>(t);
}

__device__ inline void store_from_double(void* p, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f64: static_cast<double*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = float_to_bf16_bits(static_cast<float>(v)); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_f16_bits(static_cast<float>(v)); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = saturate<int32_t>(v); break;
    case DType::i64: static_cast<int64_t*>(p)[i] = saturate<int64_t>(v); break;
    case DType::u8: static_cast<uint8_t*>(p)[i] = saturate<uint8_t>(v); break;
    case DType::boolean: static_cast<bool*>(p)[i] = v != 0.0; break;
  }
}

// Integer and bool sources convert as the CPU's static_cast does (kernels/cpu/copy.cpp): to an
// integer type modulo its range (i64 -1 to u8 is 255), to f32 and f64 rounded once from the exact
// value, to 16-bit floats through double then float, as there.
__device__ inline int64_t load_as_int64(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::i32: return static_cast<const int32_t*>(p)[i];
    case DType::i64: return static_cast<const int64_t*>(p)[i];
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
    case DType::boolean: return static_cast<const bool*>(p)[i] ? 1 : 0;
    default: return 0;  // not an integer type
  }
}

__device__ inline void store_from_int64(void* p, DType t, int64_t i, int64_t v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f64: static_cast<double*>(p)[i] = static_cast<double>(v); break;
    case DType::bf16:
      static_cast<uint16_t*>(p)[i] = float_to_bf16_bits(static_cast<float>(static_cast<double>(v)));
      break;
    case DType::f16:
      static_cast<uint16_t*>(p)[i] = float_to_f16_bits(static_cast<float>(static_cast<double>(v)));
      break;
    case DType::i32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::i64: static_cast<int64_t*>(p)[i] = v; break;
    case DType::u8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
    case DType::boolean: static_cast<bool*>(p)[i] = v != 0; break;
  }
}

__global__ void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n,
                                 Layout layout) {
  const bool integer_source = !is_floating(src_dtype);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t s, d;
    offsets_of(layout, i, &s, &d);
    if (integer_source)
      store_from_int64(dst, dst_dtype, d, load_as_int64(src, src_dtype, s));
    else
      store_from_double(dst, dst_dtype, d, load_as_double(src, src_dtype, s));
  }
}

// The dense conversion between two floating storage types, K elements per thread (the autocast
// casts between the f32 stream and 16-bit compute are all of this kind). Same rounding as the
// generic path: through f32 for the 16-bit targets, round to nearest even.
template <typename D>
__device__ __forceinline__ D convert_float(float v);
template <>
__device__ __forceinline__ float convert_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ double convert_float<double>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 convert_float<__nv_bfloat16>(float v) {
  return __nv_bfloat16_raw{float_to_bf16_bits(v)};
}
template <>
__device__ __forceinline__ __half convert_float<__half>(float v) { return __half_raw{float_to_f16_bits(v)}; }

template <typename Src, typename Dst>
__device__ __forceinline__ Dst convert_value(Src v) {
  if constexpr (std::is_same_v<Src, double> && std::is_same_v<Dst, double>) return v;
  else if constexpr (std::is_same_v<Src, double>) return convert_float<Dst>(static_cast<float>(v));
  else return convert_float<Dst>(Num<Src>::load(v));
}

template <typename Src, typename Dst, int K>
__global__ void convert_dense(const Src* src, Dst* dst, int64_t n) {
  using PS = Pack<Src, K>;
  using PD = Pack<Dst, K>;
  const int64_t packs = n / K;
  for (int64_t p = grid_thread(); p < packs; p += grid_threads()) {
    PS in = reinterpret_cast<const PS*>(src)[p];
    PD out;
#pragma unroll
    for (int k = 0; k < K; ++k) out.v[k] = convert_value<Src, Dst>(in.v[k]);
    reinterpret_cast<PD*>(dst)[p] = out;
  }
  for (int64_t i = packs * K + grid_thread(); i < n; i += grid_threads()) dst[i] = convert_value<Src, Dst>(src[i]);
}

template <typename Word>
__global__ void fill_words(Word* dst, int64_t n, Word value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}


}  // namespace

void copy_strided(const void* src, DType src_dtype, const int64_t* src_strides, void* dst, DType dst_dtype,
                  const int64_t* dst_strides, const int64_t* shape, int ndim, void* stream_handle) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  if (n == 0) return;
  auto loop = cpu::make_strided_loop<2>(shape, ndim, {src_strides, dst_strides});
  Layout layout{};
  layout.ndim = loop.ndim;
  for (int d = 0; d < loop.ndim; ++d) {
    layout.shape[d] = loop.shape[d];
    layout.src_strides[d] = loop.strides[0][d];
    layout.dst_strides[d] = loop.strides[1][d];
  }
  auto stream = static_cast<cudaStream_t>(stream_handle);
  const bool dense = layout.ndim == 1 && layout.src_strides[0] == 1 && layout.dst_strides[0] == 1;
  if (dense && src_dtype == dst_dtype) {
    BAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * dtype_size(src_dtype), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  if (dense && is_floating(src_dtype) && is_floating(dst_dtype)) {
    dispatch_floating_storage("copy", src_dtype, [&](auto src_tag) {
      using Src = decltype(src_tag);
      dispatch_floating_storage("copy", dst_dtype, [&](auto dst_tag) {
        using Dst = decltype(dst_tag);
        constexpr int K = pack_width<Src, Dst>();
        launch_packed<K>(n, pack_aligned<Src, K>(src) && pack_aligned<Dst, K>(dst), [&](auto width, unsigned grid) {
          convert_dense<Src, Dst, decltype(width)::value>
              <<<grid, kBlock, 0, stream>>>(static_cast<const Src*>(src), static_cast<Dst*>(dst), n);
        });
      });
    });
    BAM_CUDA_CHECK_LAUNCH();
    return;
  }
  const int threads = kBlock;
  unsigned blocks = grid_for(n);
  if (src_dtype == dst_dtype) {
    switch (dtype_size(src_dtype)) {
      case 1: copy_words<uint8_t><<<blocks, threads, 0, stream>>>(static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), n, layout); break;
      case 2: copy_words<uint16_t><<<blocks, threads, 0, stream>>>(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), n, layout); break;
      case 4: copy_words<uint32_t><<<blocks, threads, 0, stream>>>(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, layout); break;
      default: copy_words<uint64_t><<<blocks, threads, 0, stream>>>(static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), n, layout); break;
    }
  } else {
    convert_elements<<<blocks, threads, 0, stream>>>(src, src_dtype, dst, dst_dtype, n, layout);
  }
  BAM_CUDA_CHECK_LAUNCH();
}

void fill(void* dst, DType dtype, int64_t n, double value, void* stream_handle) {
  if (n == 0) return;
  // The value's bit pattern in the target dtype, computed on the host by the CPU conversion.
  uint64_t bits = 0;
  cpu::convert(&value, DType::f64, &bits, dtype, 1);
  auto stream = static_cast<cudaStream_t>(stream_handle);
  const int threads = kBlock;
  unsigned blocks = grid_for(n);
  switch (dtype_size(dtype)) {
    case 1: fill_words<uint8_t><<<blocks, threads, 0, stream>>>(static_cast<uint8_t*>(dst), n, static_cast<uint8_t>(bits)); break;
    case 2: fill_words<uint16_t><<<blocks, threads, 0, stream>>>(static_cast<uint16_t*>(dst), n, static_cast<uint16_t>(bits)); break;
    case 4: fill_words<uint32_t><<<blocks, threads, 0, stream>>>(static_cast<uint32_t*>(dst), n, static_cast<uint32_t>(bits)); break;
    default: fill_words<uint64_t><<<blocks, threads, 0, stream>>>(static_cast<uint64_t*>(dst), n, bits); break;
  }
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
