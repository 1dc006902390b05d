// The GPU half of hybrid JPEG decoding, for a whole batch of images per launch: dequantisation and
// libjpeg's islow IDCT (one thread per 8x8 block), then chroma upsampling and YCbCr->RGB (one
// thread per output pixel). The CPU half (data/jpeg_decoder.h: markers and Huffman) produces the
// coefficients; data/gpu_batch_plan.h fills the task tables below. The CPU specification is
// jpeg_component_plane + jpeg_upsample_convert; results are identical, bit for bit.
//
// Only the rectangle of each image that some crop reads is reconstructed: tasks list rectangles of
// blocks and of pixels, so blocks outside every crop skip the IDCT.
//
// Each launcher has an `_emulated` twin that runs the kernel's per-thread function for every
// thread index on the host (tests check the kernels' index arithmetic without a device).
#pragma once

#include <cstdint>

#include "data/jpeg_decoder.h"

namespace bam::cuda_kernels {

// A rectangle of 8x8 blocks of one component of one image.
struct JpegBlockTask {
  int64_t first_block;   // prefix sum: batch-wide index of this task's first block
  int64_t coef_offset;   // index (int16) of the component's block (0, 0) in the batch coefficients
  int64_t plane_offset;  // index (byte) of the component's plane in the batch plane buffer
  int32_t blocks_w;      // the component's stored grid width; the plane's row stride is 8 * blocks_w
  int32_t bx0, by0;      // the rectangle's first block column and row
  int32_t rect_w;        // blocks per rectangle row (its height follows from the next first_block)
  uint16_t quant[64];    // natural order
};

using data::JpegUpsample;  // how a component becomes full resolution (jpeg_upsample_method)

struct JpegPlaneView {
  int64_t plane_offset;  // byte index of the plane in the batch plane buffer
  int32_t stride;        // bytes per plane row (8 * blocks_w)
  int32_t width, height;  // samples that carry image data
  int32_t ratio_h, ratio_v;
  JpegUpsample method;
  int32_t reserved;
};

// A rectangle of output pixels of one image.
struct JpegPixelTask {
  int64_t first_pixel;  // prefix sum: batch-wide index of this task's first pixel
  int64_t rgb_offset;   // byte index of the image's RGB (width * height * 3) in the batch RGB buffer
  int32_t width, height;
  int32_t x0, y0, rect_w;  // the rectangle (its height follows from the next first_pixel)
  int32_t color_space;     // JpegColorSpace: 1 gray, 2 ycbcr, 3 rgb
  int32_t num_components;
  int32_t reserved;
  JpegPlaneView planes[3];
};

// IDCT of every block of every task: coefficients (int16) -> planes (uint8). `tasks` is device
// memory (host memory for the emulators); total_blocks is the last task's first_block plus its
// block count, as the plan computed it on the host.
void jpeg_idct_batch(const JpegBlockTask* tasks, int num_tasks, int64_t total_blocks, const int16_t* coefficients,
                     uint8_t* planes, void* stream);
void jpeg_idct_batch_emulated(const JpegBlockTask* tasks, int num_tasks, int64_t total_blocks,
                              const int16_t* coefficients, uint8_t* planes);

// Upsampling and colour conversion of every pixel of every task: planes -> interleaved RGB8.
void jpeg_upsample_convert_batch(const JpegPixelTask* tasks, int num_tasks, int64_t total_pixels,
                                 const uint8_t* planes, uint8_t* rgb, void* stream);
void jpeg_upsample_convert_batch_emulated(const JpegPixelTask* tasks, int num_tasks, int64_t total_pixels,
                                          const uint8_t* planes, uint8_t* rgb);

}  // namespace bam::cuda_kernels
