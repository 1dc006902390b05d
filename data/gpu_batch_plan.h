// The host half of the GPU data path for one batch: given each image's decoded layout (or just its
// size, for images the CPU decodes to pixels) and every crop's parameters, decides what the GPU
// kernels compute and where it goes: the rectangle of each image that some crop reads (blocks
// outside it skip the IDCT), the IDCT and colour-conversion task tables, the offsets of every
// image's planes and RGB in the batch buffers, and the crop tables per resolution. Pure C++: the
// CPU tests check the plan (and, with CUDA built, the kernels' emulators) against the CPU path.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/augment.h"
#include "data/image_decode.h"
#include "data/jpeg_decoder.h"
#include "kernels/cuda/crop_batch.h"
#include "kernels/cuda/jpeg_batch.h"

namespace bam::data {

// One image of the batch.
struct GpuBatchImage {
  int width = 0, height = 0;
  bool decode_on_gpu = false;  // true: coefficients uploaded (layout, coef_offset); false: RGB uploaded
  JpegLayout layout{};
  int64_t coef_offset = 0;  // int16 index of its coefficients in the batch coefficient buffer
};

// One crop: the image it is cut from and its task (geometry and colour; the plan fills the offsets).
struct GpuBatchCrop {
  int image = 0;
  cuda_kernels::CropTask task{};
};

// A RandomResizedCrop crop (sample_crop's parameters) as a crop task, rendering row out_index.
cuda_kernels::CropTask crop_task_from_params(const CropParams& params, int src_w, int src_h, int64_t out_index);
// The evaluation transform of render_eval as a crop task.
cuda_kernels::CropTask eval_crop_task(int src_w, int src_h, int size, double eval_resize_ratio, int64_t out_index);
// (x / 255 - mean) / std of the recipe as the kernels' scale and shift.
cuda_kernels::CropNormalize crop_normalize(const AugmentRecipe& recipe);

struct PixelRect {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // [x0, x1) x [y0, y1)
  bool empty() const { return x1 <= x0 || y1 <= y0; }
};

// The source pixels a crop task reads (its resampling taps), within the image.
PixelRect crop_source_rect(const cuda_kernels::CropTask& task, int S);

struct GpuCropGroup {
  int S = 0;
  std::vector<cuda_kernels::CropTask> crops;
  int max_rows = 0;             // largest row_hi - row_lo
  int64_t scratch_floats = 0;   // what cuda_kernels::CropScratch needs for this group
  int64_t pixel_floats = 0;
};

struct GpuBatchPlan {
  std::vector<cuda_kernels::JpegBlockTask> block_tasks;
  int64_t total_blocks = 0;
  std::vector<cuda_kernels::JpegPixelTask> pixel_tasks;
  int64_t total_pixels = 0;
  std::vector<PixelRect> rects;        // per image: what some crop reads
  std::vector<int64_t> rgb_offsets;    // per image, bytes into the RGB buffer
  std::vector<int64_t> plane_offsets;  // per image, bytes into the plane buffer (its first component)
  int64_t rgb_bytes = 0, plane_bytes = 0;
  std::vector<GpuCropGroup> groups;
};

// The crops of a training batch, grouped by resolution as the CPU loader lays them out: group g
// (global, then local) holds view v of image b at row v * B + b, with sample_crop's parameters for
// (seed, epoch, first_index + crop key, crop: Dataset::first_index), placed by ContrastiveCrop's
// boxes of its dataset index when they apply to the epoch. `sizes` are the images' (width,
// height); `crop_keys` the indices the images were asked for (a substitute for a damaged file
// keeps its key), the dataset indices where empty.
std::vector<std::vector<GpuBatchCrop>> multi_crop_tasks(const AugmentRecipe& recipe,
                                                        const std::vector<std::pair<int, int>>& sizes,
                                                        const std::vector<int64_t>& dataset_indices, uint64_t seed,
                                                        int64_t epoch, const ObjectBoxes* boxes = nullptr,
                                                        int64_t first_index = 0,
                                                        const std::vector<int64_t>& crop_keys = {});
// The evaluation transform of each image: one group of side `size`, row b for image b; with
// `whole_image`, the whole image resized to size x size (whole_image_params) instead.
std::vector<std::vector<GpuBatchCrop>> eval_crop_tasks(const AugmentRecipe& recipe,
                                                       const std::vector<std::pair<int, int>>& sizes, int size,
                                                       bool whole_image = false);

// Prepares one file for the GPU path. A sequential JPEG without an Exif rotation has its
// coefficients decoded into memory from `allocate` (decode_on_gpu = true); anything else (PNG,
// progressive, CMYK, rotated) is decoded to upright pixels on the CPU into *pixels. Throws
// ImageDecodeError for files that cannot be decoded at all.
GpuBatchImage prepare_image_for_gpu(const uint8_t* bytes, size_t size, const std::string& name,
                                    const JpegCoefficientAllocator& allocate, DecodedImage* pixels,
                                    std::vector<std::string>* warnings = nullptr);

// `crops[g]` are the crops of group g (side sizes[g]).
GpuBatchPlan plan_gpu_batch(const std::vector<GpuBatchImage>& images, const std::vector<int>& sizes,
                            const std::vector<std::vector<GpuBatchCrop>>& crops);

}  // namespace bam::data
