// Patchify and bicubic kernels on the GPU, the same linear maps as kernels/cpu/image.cpp.
// Patchify is a pure permutation: forward writes each patch element, backward gathers each
// pixel from the patch holding it. Bicubic forward gives one output pixel per thread; its
// backward gives one plane per thread (planes are small: position-embedding grids).
#include "engine/cuda_check.h"
#include "kernels/cuda/image.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

template <typename S>
__global__ void patchify_forward_kernel(const S* images, S* patches, int64_t total, int64_t C, int64_t H, int64_t W,
                                        int64_t P) {
  const int64_t Hp = H / P, Wp = W / P, K = C * P * P;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t k = t % K, patch = (t / K) % (Hp * Wp), b = t / (K * Hp * Wp);
    int64_t c = k / (P * P), ky = (k / P) % P, kx = k % P;
    int64_t y = (patch / Wp) * P + ky, x = (patch % Wp) * P + kx;
    patches[t] = images[((b * C + c) * H + y) * W + x];
  }
}

template <typename S>
__global__ void patchify_backward_kernel(const S* d_patches, S* d_images, int64_t total, int64_t C, int64_t H,
                                         int64_t W, int64_t P) {
  const int64_t Hp = H / P, Wp = W / P, K = C * P * P;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t x = t % W, y = (t / W) % H, c = (t / (W * H)) % C, b = t / (W * H * C);
    if (y >= Hp * P || x >= Wp * P) {
      d_images[t] = Num<S>::store(typename Num<S>::Compute(0));
      continue;
    }
    int64_t patch = (y / P) * Wp + x / P, k = (c * P + y % P) * P + x % P;
    d_images[t] = d_patches[(b * Hp * Wp + patch) * K + k];
  }
}

__device__ __forceinline__ double cubic_near(double t, double a) { return ((a + 2) * t - (a + 3)) * t * t + 1; }
__device__ __forceinline__ double cubic_far(double t, double a) { return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a; }

// The four clamped source indices and weights of output coordinate o.
__device__ __forceinline__ void cubic_taps(int64_t o, int64_t in_size, int64_t out_size, int64_t* index,
                                           double* weight) {
  const double a = -0.75;
  double src = (o + 0.5) * (double(in_size) / double(out_size)) - 0.5;
  double base = floor(src), t = src - base;
  weight[0] = cubic_far(t + 1, a);
  weight[1] = cubic_near(t, a);
  weight[2] = cubic_near(1 - t, a);
  weight[3] = cubic_far(2 - t, a);
  for (int k = 0; k < 4; ++k) {
    int64_t i = int64_t(base) - 1 + k;
    index[k] = i < 0 ? 0 : (i > in_size - 1 ? in_size - 1 : i);
  }
}

template <typename S>
__global__ void bicubic_forward_kernel(const S* x, S* y, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h,
                                       int64_t out_w) {
  using N_ = Num<S>;
  const int64_t total = N * out_h * out_w;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t ox = t % out_w, oy = (t / out_w) % out_h, n = t / (out_w * out_h);
    int64_t ri[4], ci[4];
    double rw[4], cw[4];
    cubic_taps(oy, in_h, out_h, ri, rw);
    cubic_taps(ox, in_w, out_w, ci, cw);
    const S* plane = x + n * in_h * in_w;
    double acc = 0;
    for (int i = 0; i < 4; ++i) {
      double r = 0;
      for (int j = 0; j < 4; ++j) r += cw[j] * double(N_::load(plane[ri[i] * in_w + ci[j]]));
      acc += rw[i] * r;
    }
    y[t] = N_::store(typename N_::Compute(acc));
  }
}

template <typename S>
__global__ void bicubic_backward_kernel(const S* dy, S* dx, double* scratch, int64_t N, int64_t in_h, int64_t in_w,
                                        int64_t out_h, int64_t out_w) {
  using N_ = Num<S>;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    double* acc = scratch + n * in_h * in_w;
    for (int64_t k = 0; k < in_h * in_w; ++k) acc[k] = 0;
    for (int64_t oy = 0; oy < out_h; ++oy) {
      int64_t ri[4];
      double rw[4];
      cubic_taps(oy, in_h, out_h, ri, rw);
      for (int64_t ox = 0; ox < out_w; ++ox) {
        int64_t ci[4];
        double cw[4];
        cubic_taps(ox, in_w, out_w, ci, cw);
        double g = N_::load(dy[(n * out_h + oy) * out_w + ox]);
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) acc[ri[i] * in_w + ci[j]] += rw[i] * cw[j] * g;
      }
    }
    for (int64_t k = 0; k < in_h * in_w; ++k) dx[n * in_h * in_w + k] = N_::store(typename N_::Compute(acc[k]));
  }
}

}  // namespace

void patchify_forward(DType dtype, const void* images, void* patches, int64_t B, int64_t C, int64_t H, int64_t W,
                      int64_t P, void* stream) {
  int64_t total = B * (H / P) * (W / P) * C * P * P;
  if (total == 0) return;
  dispatch_floating_storage("patchify", dtype, [&](auto tag) {
    using S = decltype(tag);
    patchify_forward_kernel<S><<<grid_for(total), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(images), static_cast<S*>(patches), total, C, H, W, P);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void patchify_backward(DType dtype, const void* d_patches, void* d_images, int64_t B, int64_t C, int64_t H, int64_t W,
                       int64_t P, void* stream) {
  int64_t total = B * C * H * W;
  if (total == 0) return;
  dispatch_floating_storage("patchify_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    patchify_backward_kernel<S><<<grid_for(total), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(d_patches), static_cast<S*>(d_images), total, C, H, W, P);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void bicubic_forward(DType dtype, const void* x, void* y, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h,
                     int64_t out_w, void* stream) {
  if (N * out_h * out_w == 0) return;
  dispatch_floating_storage("interpolate_bicubic", dtype, [&](auto tag) {
    using S = decltype(tag);
    bicubic_forward_kernel<S><<<grid_for(N * out_h * out_w), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(x), static_cast<S*>(y), N, in_h, in_w, out_h, out_w);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void bicubic_backward(DType dtype, const void* dy, void* dx, void* scratch, int64_t N, int64_t in_h, int64_t in_w,
                      int64_t out_h, int64_t out_w, void* stream) {
  if (N * in_h * in_w == 0) return;
  dispatch_floating_storage("interpolate_bicubic_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    bicubic_backward_kernel<S><<<grid_for(N), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(dy), static_cast<S*>(dx), static_cast<double*>(scratch), N, in_h, in_w, out_h, out_w);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
