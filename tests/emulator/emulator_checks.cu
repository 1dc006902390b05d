// The kernels of emulator_checks.h. Compiled only for the CUDA emulator (the GPU needs no proof
// that it has barriers): some of them are wrong on purpose, and the emulator must say so.
#include "tests/emulator/emulator_checks.h"

#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::emulator_checks {
namespace {

__global__ void warp_shuffles_kernel(const float* in, float* sums, float* rotated, float* up) {
  const int t = threadIdx.x, lane = t % 32;
  float v = in[t];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) sums[t / 32] = v;
  rotated[t] = __shfl_sync(0xffffffffu, in[t], (lane + 1) % 32);
  up[t] = __shfl_up_sync(0xffffffffu, in[t], 1);
}

__global__ void block_sum_kernel(const float* in, float* out, int n) {
  __shared__ float partial[1024];
  float v = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) v += in[i];
  partial[threadIdx.x] = v;
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    __syncthreads();
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
  }
  if (threadIdx.x == 0) out[0] = partial[0];
}

__global__ void exited_lane_kernel(float* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1);
}

__global__ void barrier_against_shuffle_kernel(float* out) {
  if (threadIdx.x % 32 < 16) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 16);
  } else {
    __syncthreads();
    out[threadIdx.x] = 2.0f;
  }
}

__global__ void shape_kernel(float* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) out[0] = float(gridDim.y);
}

__global__ void dynamic_shared_kernel(float* out, int floats) {
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  float* f = reinterpret_cast<float*>(smem);
  for (int i = threadIdx.x; i < floats; i += blockDim.x) f[i] = float(i);
  __syncthreads();
  if (threadIdx.x == 0) out[0] = f[floats - 1];
}

__global__ void half_warp_kernel(const float* in, float* out) {
  const unsigned t = threadIdx.x, mask = t < 16 ? 0x0000ffffu : 0xffff0000u;
  out[t] = __shfl_xor_sync(mask, in[t], 1, 16);
}

__global__ void interleaved_groups_kernel(float* out) {
  const unsigned t = threadIdx.x;
  float v = float(t);
  if (t >= 16) v = __shfl_xor_sync(0xffff0000u, v, 1);
  out[t] = __shfl_xor_sync(0xffffffffu, v, 16);
}

__global__ void racy_broadcast_kernel(float* out) {
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  float* value = reinterpret_cast<float*>(smem);
  if (threadIdx.x == 0) *value = 42.0f;
  out[blockIdx.x * blockDim.x + threadIdx.x] = *value;  // missing: __syncthreads() before the read
}

__global__ void write_kernel(float* out, int count) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) out[i] = 1.0f;
}

__global__ void copy_kernel(const float* in, float* out, int count) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) out[i] = in[i];
}

}  // namespace

void warp_shuffles(const float* in, float* sums, float* rotated, float* up, int threads) {
  warp_shuffles_kernel<<<1, threads>>>(in, sums, rotated, up);
  BAM_CUDA_CHECK_LAUNCH();
}
void block_sum(const float* in, float* out, int n, int threads) {
  block_sum_kernel<<<1, threads>>>(in, out, n);
  BAM_CUDA_CHECK_LAUNCH();
}
void shuffle_with_exited_lane(float* out) { exited_lane_kernel<<<1, 32>>>(out); }
void barrier_against_shuffle(float* out) { barrier_against_shuffle_kernel<<<1, 64>>>(out); }
void launch_shape(int threads, unsigned grid_x, unsigned grid_y, float* out) {
  shape_kernel<<<dim3(grid_x, grid_y), threads>>>(out);
  BAM_CUDA_CHECK_LAUNCH();
}
void dynamic_shared(size_t bytes, bool opt_in, float* out) {
  if (opt_in)
    BAM_CUDA_CHECK(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(bytes)));
  dynamic_shared_kernel<<<1, 128, bytes>>>(out, int(bytes / sizeof(float)));
  BAM_CUDA_CHECK_LAUNCH();
}
void half_warp_shuffles(const float* in, float* out) {
  half_warp_kernel<<<1, 32>>>(in, out);
  BAM_CUDA_CHECK_LAUNCH();
}
void interleaved_groups(float* out) {
  interleaved_groups_kernel<<<1, 32>>>(out);
  BAM_CUDA_CHECK_LAUNCH();
}
void racy_broadcast(float* out) {
  racy_broadcast_kernel<<<2, 64, sizeof(float)>>>(out);
  BAM_CUDA_CHECK_LAUNCH();
}
void write_elements(float* out, int n, bool one_past_the_end) {
  write_kernel<<<1, 64>>>(out, one_past_the_end ? n + 1 : n);
}
void copy_elements(const float* in, float* out, int n, bool one_past_the_end) {
  copy_kernel<<<1, 64>>>(in, out, one_past_the_end ? n + 1 : n);
}

}  // namespace bam::emulator_checks
