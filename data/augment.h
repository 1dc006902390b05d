// The BAM/DINO multi-crop augmentation (DESIGN.md section 5), split in two so that the GPU path
// can share it: sample_crop draws every random choice for one crop from the counter-based RNG
// keyed by (seed, epoch, image, crop, purpose), and render_crop applies them to RGB8 pixels.
// render_crop is the CPU reference the GPU kernels are tested against.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "data/image_decode.h"
#include "data/object_boxes.h"

namespace bam::data {

struct AugmentRecipe {
  int64_t global_crops = 2, local_crops = 0;
  int64_t global_size = 224, local_size = 96;
  double global_scale_min = 0.08, global_scale_max = 1.0;
  double local_scale_min = 0.05, local_scale_max = 0.25;
  double brightness = 0.4, contrast = 0.4, saturation = 0.4, hue = 0.1;
  double jitter_p = 0.8, grayscale_p = 0.2;
  double blur_sigma_min = 0.1, blur_sigma_max = 2.0;
  // The linear probe's training transform: RandomResizedCrop (bilinear) + flip only (no colour,
  // blur, solarise).
  bool crop_and_flip_only = false;
  // Evaluation resize: the shorter side goes to round(size * eval_resize_ratio) before the centre
  // crop (256/224 for ImageNet; 1 keeps small images such as Fashion-MNIST as they are).
  double eval_resize_ratio = 256.0 / 224.0;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};  // ImageNet normalisation
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  int64_t views() const { return global_crops + local_crops; }
};

// Every random decision for one crop, plus its geometry in source pixels.
struct CropParams {
  int top = 0, left = 0, height = 0, width = 0;  // the source box
  int out_size = 0;                              // square output side
  bool flip = false;
  bool jitter = false;
  float brightness = 1, contrast = 1, saturation = 1, hue = 0;
  std::array<int, 4> jitter_order{0, 1, 2, 3};  // 0 brightness, 1 contrast, 2 saturation, 3 hue
  bool grayscale = false;
  float blur_sigma = 0;  // 0: no blur
  bool solarize = false;
  bool bilinear = false;  // the resize's filter: PIL's bilinear instead of bicubic (whole_image_params)
};

// What the RNG is drawn for; part of the counter, so purposes never share numbers.
enum class AugmentPurpose : uint32_t { geometry = 1, flip, jitter, grayscale, blur, solarize, placement };

// Random 32-bit word `draw` for (seed, epoch, image, crop, purpose), identical on CPU and GPU.
uint32_t augment_bits(uint64_t seed, uint32_t epoch, uint32_t image, uint32_t crop, AugmentPurpose purpose,
                      uint32_t draw);
// The same word as a uniform [0, 1) number.
float augment_uniform(uint64_t seed, uint32_t epoch, uint32_t image, uint32_t crop,
                      AugmentPurpose purpose, uint32_t draw);

// View `crop` (0-based; global views first) of `image`. Global view 0 (and every even global
// view) blurs with p = 1.0; odd global views blur with p = 0.1 and solarize with p = 0.2; local
// views blur with p = 0.5 (DINO's DataAugmentationDINO). With a placement, the crop's corner is
// ContrastiveCrop's (random_resized_box); its size and everything else are drawn as without.
CropParams sample_crop(const AugmentRecipe& recipe, int width, int height, uint64_t seed, uint32_t epoch,
                       uint32_t image, uint32_t crop, const CropPlacement* placement = nullptr);

// torchvision's RandomResizedCrop.get_params: 10 tries at an area in [scale_min, scale_max] of the
// image with log-uniform aspect ratio in [3/4, 4/3], else a centre crop clamped to that ratio.
// With a placement (ContrastiveCrop's get_params), a try that fits is placed with its centre at
// box edge + Beta(alpha, alpha) of the box's extent: the corner ranges from
// clamp(int(height * box.top) - h / 2, 0, height - h) to the same at box.bottom (and so for the
// columns), and the corner is the first plus int(Beta draw x the range's length).
void random_resized_box(int width, int height, double scale_min, double scale_max, uint64_t seed, uint32_t epoch,
                        uint32_t image, uint32_t crop, int* top, int* left, int* box_h, int* box_w,
                        const CropPlacement* placement = nullptr);

// The parameters of torchvision's Resize((size, size)) of the whole image (bilinear, antialiased;
// no crop, flip or colour): the input of ContrastiveCrop's box update, rendered by render_crop.
CropParams whole_image_params(int width, int height, int size);

// Renders a crop: antialiased bicubic resize of the box (PIL's filter, a = -0.5, support scaled
// when shrinking), flip, colour jitter in the sampled order, grayscale, Gaussian blur, solarise,
// then (x / 255 - mean) / std into out [3, out_size, out_size] (f32, CHW). Intermediate values stay
// in float in [0, 255] (PIL would round to 8 bits between steps: differences are below 1 level).
void render_crop(const DecodedImage& image, const CropParams& params, const AugmentRecipe& recipe,
                 float* out);
// Whether render_crop's per-pixel steps (jitter, grayscale, solarisation) run sixteen pixels at a
// time with AVX-512 (augment_pixels.h; on a CPU that has it) or pixel by pixel, the specification.
// Both give the same bits. For tests and benchmarks; not to be called while a crop is rendered.
void render_crop_use_avx512(bool use);

// The geometry of the evaluation transform for a width x height image: the resized size (shorter
// side round(size * eval_resize_ratio), the other in proportion) and the centre crop's corner.
struct EvalGeometry {
  int resized_w = 0, resized_h = 0, top = 0, left = 0;
};
EvalGeometry eval_geometry(int width, int height, int size, double eval_resize_ratio);

// The evaluation transform: resize the shorter side to round(size * eval_resize_ratio) (bicubic,
// antialiased; skipped when it already has that size), centre crop size x size, normalise.
// out [3, size, size].
void render_eval(const DecodedImage& image, int size, const AugmentRecipe& recipe, float* out);

// Separable antialiased bicubic resampling of a float HWC RGB image region (PIL's ImagingResample
// arithmetic in float, as resize(box=...): the filter reads the image around the box): box (top,
// left, box_h, box_w) of src [src_h, src_w, 3] -> dst [out_h, out_w, 3]. render_crop's resize
// reads only its box, as torchvision's resized_crop.
void resize_bicubic_aa(const float* src, int src_h, int src_w, double top, double left,
                       double box_h, double box_w, float* dst, int out_h, int out_w);

}  // namespace bam::data
