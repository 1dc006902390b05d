// The multi-crop augmentation on the GPU, one launch per stage for a whole group of crops of one
// resolution S: antialiased bicubic resize straight from each decoded image (horizontal pass into
// a scratch of only the source rows the crop reads, then vertical pass with the flip folded in),
// colour jitter in each crop's own order (contrast needs the crop's mean grey: per-row sums, then
// per-crop means), grayscale, separable Gaussian blur, solarisation, and normalisation, writing f32
// or bf16 CHW straight into the model's input tensor. The CPU specification is data::render_crop
// (and data::render_eval, which the crop geometry below also expresses); data/gpu_batch_plan.h
// fills the tasks from CropParams.
//
// This file is compiled with -fmad=false so that every float operation rounds as the CPU's does;
// results then differ from the CPU only where expf differs in the last bit (blur weights).
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

// One crop. Output pixel (y, x) of the S x S crop samples the source around
//   x_center = x0 + (clamp(x + off_x, 0, lim_x) + 0.5) * scale_x      (likewise for y)
// with PIL's bicubic filter widened by the scale when shrinking. A RandomResizedCrop box (top,
// left, h, w) is x0 = left, scale_x = w / S, off_x = 0, lim_x = S - 1; the evaluation transform
// (resize to ow x oh, centre crop at (top, left)) is x0 = 0, scale_x = width / ow, off_x = left,
// lim_x = ow - 1. The filter reads only [clip_x0, clip_x1): the box (torchvision cuts it out, then
// resizes), or the whole image for the evaluation's resize.
struct CropTask {
  int64_t src_offset;  // byte index of the source image's RGB8 (src_w * src_h * 3) in the batch buffer
  int32_t src_w, src_h;
  double x0, y0, scale_x, scale_y;
  int32_t off_x, off_y, lim_x, lim_y;
  int32_t clip_x0, clip_x1, clip_y0, clip_y1;
  int32_t row_lo, row_hi;  // source rows the horizontal pass produces
  int64_t mid_offset;      // float index of those rows (row_hi - row_lo) x S x 3 in the scratch
  int64_t out_index;       // the crop's row in the group's output tensor [n, 3, S, S]
  int32_t flip, jitter, grayscale, solarize;
  float brightness, contrast, saturation, hue;
  int32_t order[4];  // jitter order: 0 brightness, 1 contrast, 2 saturation, 3 hue
  float blur_sigma;  // 0: no blur
  int32_t filter;    // the resize's: data::augment_math::ResampleFilter (bicubic 0, bilinear 1)
};

// (x / 255 - mean) / std as x * scale - shift, per channel.
struct CropNormalize {
  float scale[3];
  float shift[3];
};

// Device (or, for the emulator, host) working memory for one group, sized by the plan:
//   scratch:  max(sum of the crops' (row_hi - row_lo) * S * 3, count * S * S * 3) floats
//   pixels:   count * S * S * 3 floats
//   row_sums: count * S doubles;  means: count floats
struct CropScratch {
  float* scratch;
  float* pixels;
  double* row_sums;
  float* means;
};

// Renders `count` crops of side S. `tasks` is device memory; max_rows is the largest
// row_hi - row_lo over them. out_dtype is f32 or bf16.
void crop_batch_render(const CropTask* tasks, int count, int S, int max_rows, const uint8_t* rgb,
                       const CropNormalize& normalize, const CropScratch& scratch, DType out_dtype, void* out,
                       void* stream);
// The same stages on the host, thread by thread (for tests without a device).
void crop_batch_render_emulated(const CropTask* tasks, int count, int S, int max_rows, const uint8_t* rgb,
                                const CropNormalize& normalize, const CropScratch& scratch, DType out_dtype,
                                void* out);

}  // namespace bam::cuda_kernels
