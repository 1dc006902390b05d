// Batched JPEG reconstruction on the GPU: islow IDCT per 8x8 block, then fancy upsampling and
// fixed-point YCbCr->RGB per pixel. Every rounding step is the CPU specification's
// (data/jpeg_idct.cpp, data/jpeg_reconstruct.cpp), computed per thread instead of per row.
#include "engine/cuda_check.h"
#include "kernels/cuda/device_host.cuh"
#include "kernels/cuda/jpeg_batch.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

// ---- IDCT (jidctint.c constants: 13 fractional bits, 2 extra bits between the passes) ----
constexpr int kConstBits = 13, kPass1Bits = 2;
constexpr int kPass1Shift = kConstBits - kPass1Bits, kPass2Shift = kConstBits + kPass1Bits + 3;
constexpr int64_t kF0_298 = 2446, kF0_390 = 3196, kF0_541 = 4433, kF0_765 = 6270, kF0_899 = 7373,
                  kF1_175 = 9633, kF1_501 = 12299, kF1_847 = 15137, kF1_961 = 16069, kF2_053 = 16819,
                  kF2_562 = 20995, kF3_072 = 25172;

BAM_HD void idct8(int64_t* v) {
  int64_t z1 = (v[2] + v[6]) * kF0_541;
  int64_t tmp2 = z1 - v[6] * kF1_847, tmp3 = z1 + v[2] * kF0_765;
  int64_t tmp0 = (v[0] + v[4]) * (1 << kConstBits), tmp1 = (v[0] - v[4]) * (1 << kConstBits);
  int64_t tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3, tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
  int64_t o0 = v[7], o1 = v[5], o2 = v[3], o3 = v[1];
  int64_t w1 = o0 + o3, w2 = o1 + o2, w3 = o0 + o2, w4 = o1 + o3;
  int64_t z5 = (w3 + w4) * kF1_175;
  o0 *= kF0_298;
  o1 *= kF2_053;
  o2 *= kF3_072;
  o3 *= kF1_501;
  w1 *= -kF0_899;
  w2 *= -kF2_562;
  w3 = w3 * -kF1_961 + z5;
  w4 = w4 * -kF0_390 + z5;
  o0 += w1 + w3;
  o1 += w2 + w4;
  o2 += w2 + w3;
  o3 += w1 + w4;
  v[0] = tmp10 + o3;
  v[7] = tmp10 - o3;
  v[1] = tmp11 + o2;
  v[6] = tmp11 - o2;
  v[2] = tmp12 + o1;
  v[5] = tmp12 - o1;
  v[3] = tmp13 + o0;
  v[4] = tmp13 - o0;
}

BAM_HD int64_t descale(int64_t x, int n) { return (x + (int64_t{1} << (n - 1))) >> n; }
BAM_HD uint8_t range_limit(int64_t x) { return static_cast<uint8_t>(clamp_to<int64_t>(x + 128, 0, 255)); }

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
    int64_t dc = static_cast<int32_t>(int64_t{in[0]} * t.quant[0] * (1 << kPass1Bits));
    uint8_t value = range_limit(descale(dc, kPass1Bits + 3));
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) out[r * stride + c] = value;
    return;
  }
  int32_t workspace[64];
  for (int col = 0; col < 8; ++col) {
    int64_t v[8];
    for (int row = 0; row < 8; ++row) v[row] = int64_t{in[row * 8 + col]} * t.quant[row * 8 + col];
    idct8(v);
    for (int row = 0; row < 8; ++row) workspace[row * 8 + col] = static_cast<int32_t>(descale(v[row], kPass1Shift));
  }
  for (int row = 0; row < 8; ++row) {
    int64_t v[8];
    for (int k = 0; k < 8; ++k) v[k] = workspace[row * 8 + k];
    idct8(v);
    for (int k = 0; k < 8; ++k) out[row * stride + k] = range_limit(descale(v[k], kPass2Shift));
  }
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

BAM_HD uint8_t clamp255(int32_t v) { return static_cast<uint8_t>(clamp_to(v, 0, 255)); }

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
  // R = Y + 1.402 Cr', G = Y - 0.34414 Cb' - 0.71414 Cr', B = Y + 1.772 Cb' in 16-bit fixed point.
  const int32_t cb = c1 - 128, cr = c2 - 128, half = 1 << 15;
  out[0] = clamp255(c0 + ((91881 * cr + half) >> 16));
  out[1] = clamp255(c0 + ((-22554 * cb - 46802 * cr + half) >> 16));
  out[2] = clamp255(c0 + ((116130 * cb + half) >> 16));
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
