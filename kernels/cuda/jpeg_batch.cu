// Batched JPEG reconstruction on the GPU: islow IDCT per 8x8 block, then fancy upsampling and
// fixed-point YCbCr->RGB per pixel. The IDCT butterfly and the colour conversion are the CPU
// decoder's own (data/jpeg_arith.h); the upsampling filters are those of data/jpeg_reconstruct.cpp
// evaluated for one output sample instead of a row.
#include "engine/cuda_check.h"
#include "kernels/cuda/device_host.cuh"
#include "kernels/cuda/jpeg_batch.h"
#include "kernels/cuda/numeric.cuh"
#include "data/jpeg_arith.h"

namespace bam::cuda_kernels {
namespace {

using namespace data::jpeg_arith;

// One 8x8 block: dequantise, two IDCT passes, level shift, clamp (idct_islow_block).
BAM_HD void idct_block(const JpegBlockTask* tasks, int num_tasks, const int16_t* coefficients, uint8_t* planes,
                       int64_t block) {
  const JpegBlockTask& t = tasks[find_task(tasks, num_tasks, &JpegBlockTask::first_block, block)];
  const int64_t local = block - t.first_block;
  const int bx = t.bx0 + static_cast<int>(local % t.rect_w), by = t.by0 + static_cast<int>(local / t.rect_w);
  const int16_t* in = coefficients + t.coef_offset + (int64_t{by} * t.blocks_w + bx) * 64;
  const int64_t stride = int64_t{t.blocks_w} * 8;
  uint8_t* out = planes + t.plane_offset + by * 8 * stride + bx * 8;
  bool any_ac = false;
  for (int k = 1; k < 64; ++k) any_ac |= in[k] != 0;
  if (!any_ac) {  // the CPU's DC-only shortcut, including its 32-bit product
    const uint8_t value = dc_only_value(in[0], t.quant[0]);
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) out[r * stride + c] = value;
    return;
  }
  idct_two_passes(in, t.quant, out, stride);
}

// ---- Upsampling (jdsample.c) and colour (jdcolor.c) for one output pixel ----

BAM_HD int sample(const uint8_t* planes, const JpegPlaneView& p, int x, int y) {
  return planes[p.plane_offset + int64_t{y} * p.stride + x];
}

// Component value at full-resolution pixel (x, y): the triangle filters of jpeg_upsample_convert
// evaluated for one output sample (the ends replicate, so the neighbour index is clamped).
BAM_HD int upsampled(const uint8_t* planes, const JpegPlaneView& p, int x, int y) {
  switch (p.method) {
    case JpegUpsample::full:
      return sample(planes, p, x, y);
    case JpegUpsample::h2v1_fancy: {
      int i = x / 2, here = 3 * sample(planes, p, i, y);
      if (x % 2 == 0) return (here + sample(planes, p, i > 0 ? i - 1 : 0, y) + 1) >> 2;
      return (here + sample(planes, p, i + 1 < p.width ? i + 1 : p.width - 1, y) + 2) >> 2;
    }
    case JpegUpsample::h1v2_fancy: {
      int row = y / 2;
      int other = (y & 1) ? (row + 1 < p.height ? row + 1 : p.height - 1) : (row > 0 ? row - 1 : 0);
      return (3 * sample(planes, p, x, row) + sample(planes, p, x, other) + ((y & 1) ? 2 : 1)) >> 2;
    }
    case JpegUpsample::h2v2_fancy: {
      int row = y / 2;
      int other = (y & 1) ? (row + 1 < p.height ? row + 1 : p.height - 1) : (row > 0 ? row - 1 : 0);
      int i = x / 2;
      int j = (x % 2 == 0) ? (i > 0 ? i - 1 : 0) : (i + 1 < p.width ? i + 1 : p.width - 1);
      int near_sum = 3 * sample(planes, p, i, row) + sample(planes, p, i, other);
      int far_sum = 3 * sample(planes, p, j, row) + sample(planes, p, j, other);
      return (3 * near_sum + far_sum + ((x % 2 == 0) ? 8 : 7)) >> 4;
    }
    case JpegUpsample::replicate:
      return sample(planes, p, x / p.ratio_h, y / p.ratio_v);
  }
  return 0;
}

BAM_HD void convert_pixel(const JpegPixelTask* tasks, int num_tasks, const uint8_t* planes, uint8_t* rgb,
                          int64_t pixel) {
  const JpegPixelTask& t = tasks[find_task(tasks, num_tasks, &JpegPixelTask::first_pixel, pixel)];
  const int64_t local = pixel - t.first_pixel;
  const int x = t.x0 + static_cast<int>(local % t.rect_w), y = t.y0 + static_cast<int>(local / t.rect_w);
  uint8_t* out = rgb + t.rgb_offset + (int64_t{y} * t.width + x) * 3;
  const int c0 = upsampled(planes, t.planes[0], x, y);
  if (t.color_space == 1) {
    out[0] = out[1] = out[2] = static_cast<uint8_t>(c0);
    return;
  }
  const int c1 = upsampled(planes, t.planes[1], x, y), c2 = upsampled(planes, t.planes[2], x, y);
  if (t.color_space == 3) {
    out[0] = static_cast<uint8_t>(c0);
    out[1] = static_cast<uint8_t>(c1);
    out[2] = static_cast<uint8_t>(c2);
    return;
  }
  ycbcr_to_rgb_pixel(c0, c1, c2, out);
}

__global__ void idct_kernel(const JpegBlockTask* tasks, int num_tasks, const int16_t* coefficients,
                            uint8_t* planes, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    idct_block(tasks, num_tasks, coefficients, planes, i);
}

__global__ void convert_kernel(const JpegPixelTask* tasks, int num_tasks, const uint8_t* planes, uint8_t* rgb,
                               int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    convert_pixel(tasks, num_tasks, planes, rgb, i);
}

}  // namespace

void jpeg_idct_batch(const JpegBlockTask* tasks, int num_tasks, int64_t total_blocks, const int16_t* coefficients,
                     uint8_t* planes, void* stream) {
  if (total_blocks == 0) return;
  idct_kernel<<<grid_for(total_blocks), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(tasks, num_tasks, coefficients,
                                                                                     planes, total_blocks);
  BAM_CUDA_CHECK_LAUNCH();
}

void jpeg_idct_batch_emulated(const JpegBlockTask* tasks, int num_tasks, int64_t total_blocks,
                              const int16_t* coefficients, uint8_t* planes) {
  for (int64_t i = 0; i < total_blocks; ++i) idct_block(tasks, num_tasks, coefficients, planes, i);
}

void jpeg_upsample_convert_batch(const JpegPixelTask* tasks, int num_tasks, int64_t total_pixels,
                                 const uint8_t* planes, uint8_t* rgb, void* stream) {
  if (total_pixels == 0) return;
  convert_kernel<<<grid_for(total_pixels), kBlock, 0, static_cast<cudaStream_t>(stream)>>>(tasks, num_tasks, planes,
                                                                                        rgb, total_pixels);
  BAM_CUDA_CHECK_LAUNCH();
}

void jpeg_upsample_convert_batch_emulated(const JpegPixelTask* tasks, int num_tasks, int64_t total_pixels,
                                          const uint8_t* planes, uint8_t* rgb) {
  for (int64_t i = 0; i < total_pixels; ++i) convert_pixel(tasks, num_tasks, planes, rgb, i);
}

}  // namespace bam::cuda_kernels
