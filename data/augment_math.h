// The per-pixel arithmetic of the multi-crop augmentation, shared by the CPU path (data/augment.cpp,
// the specification) and the GPU kernels (kernels/cuda/crop_batch.cu): PIL's bicubic resampling
// windows and weights (bicubic, and bilinear for the box update's input), the colour-jitter steps on one pixel, RGB<->HSV, the Gaussian blur's weights.
// One definition, so the GPU crops are the CPU crops (tests/test_gpu_batch_plan.cpp checks it).
#pragma once

#include <cmath>

#include "engine/host_device.h"

namespace bam::data::augment_math {

// The filters of PIL's resize: bicubic (the crops) and bilinear (torchvision's Resize default:
// the input of ContrastiveCrop's box update, whole_image_params).
enum ResampleFilter : int { kBicubic = 0, kBilinear = 1 };

// PIL's bicubic filter (a = -0.5), support 2.
BAM_HD double pil_bicubic(double x) {
  const double a = -0.5;
  x = x < 0 ? -x : x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// PIL's bilinear (triangle) filter, support 1.
BAM_HD double pil_bilinear(double x) {
  x = x < 0 ? -x : x;
  return x < 1 ? 1 - x : 0;
}

// The source samples output coordinate `coord` reads (PIL's precompute_coeffs): centred at
// in_start + (coord + 0.5) * scale, the filter stretched by the scale when shrinking (antialiasing),
// clipped to [clip_lo, clip_hi): a crop's box (torchvision's resized_crop cuts the box out, then
// resizes it, so PIL's filter never reaches past the box), the whole image for the evaluation's
// resize.
struct ResampleWindow {
  int lo, hi;
  double center, filter_scale;
  double total;  // the sum of the raw weights, in double; 1 when they cancel (PIL keeps them then)
  int filter;    // ResampleFilter
  BAM_HD double raw(int k) const {
    const double x = (k - center + 0.5) / filter_scale;
    return filter == kBilinear ? pil_bilinear(x) : pil_bicubic(x);
  }
  // The weight as PIL's float table holds it: rounded to float, then normalised.
  BAM_HD float weight(int k) const {
    return static_cast<float>(static_cast<double>(static_cast<float>(raw(k))) / total);
  }
};

BAM_HD ResampleWindow resample_window(double in_start, double scale, int coord, int clip_lo, int clip_hi,
                                      int filter = kBicubic) {
  ResampleWindow w;
  w.filter = filter;
  w.filter_scale = scale > 1.0 ? scale : 1.0;
  const double support = (filter == kBilinear ? 1.0 : 2.0) * w.filter_scale;
  w.center = in_start + (coord + 0.5) * scale;
  w.lo = static_cast<int>(w.center - support + 0.5);
  if (w.lo < clip_lo) w.lo = clip_lo;
  w.hi = static_cast<int>(w.center + support + 0.5);
  if (w.hi > clip_hi) w.hi = clip_hi;
  w.total = 0;
  for (int k = w.lo; k < w.hi; ++k) w.total += w.raw(k);
  if (w.total == 0) w.total = 1;
  return w;
}

BAM_HD float clamp255f(float v) { return v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v); }
BAM_HD float luma(const float* px) { return 0.299f * px[0] + 0.587f * px[1] + 0.114f * px[2]; }

BAM_HD void rgb_to_hsv(float r, float g, float b, float* h, float* s, float* v) {
  float mx = r > g ? r : g;
  mx = mx > b ? mx : b;
  float mn = r < g ? r : g;
  mn = mn < b ? mn : b;
  const float d = mx - mn;
  *v = mx;
  *s = mx > 0 ? d / mx : 0;
  if (d == 0) {
    *h = 0;
    return;
  }
  float hh;
  if (mx == r) hh = (g - b) / d;
  else if (mx == g) hh = 2 + (b - r) / d;
  else hh = 4 + (r - g) / d;
  hh /= 6;
  *h = hh < 0 ? hh + 1 : hh;
}

BAM_HD void hsv_to_rgb(float h, float s, float v, float* r, float* g, float* b) {
  const float hh = h * 6;
  const int i = static_cast<int>(floorf(hh)) % 6;
  const float f = hh - floorf(hh);
  const float p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  switch (i) {
    case 0: *r = v, *g = t, *b = p; break;
    case 1: *r = q, *g = v, *b = p; break;
    case 2: *r = p, *g = v, *b = t; break;
    case 3: *r = p, *g = q, *b = v; break;
    case 4: *r = t, *g = p, *b = v; break;
    default: *r = v, *g = p, *b = q; break;
  }
}

// Jitter step `op` on one RGB pixel: 0 brightness (blend with black), 1 contrast (blend with the
// crop's mean grey level `mean`), 2 saturation (blend with the pixel's grey level), 3 hue (rotate
// in HSV). Results stay in [0, 255].
BAM_HD void jitter_pixel(float* px, int op, float brightness, float contrast, float saturation, float hue,
                         float mean) {
  switch (op) {
    case 0:
      for (int c = 0; c < 3; ++c) px[c] = clamp255f(px[c] * brightness);
      break;
    case 1:
      for (int c = 0; c < 3; ++c) px[c] = clamp255f(mean + contrast * (px[c] - mean));
      break;
    case 2: {
      const float gray = luma(px);
      for (int c = 0; c < 3; ++c) px[c] = clamp255f(gray + saturation * (px[c] - gray));
      break;
    }
    default: {
      float h, s, v;
      rgb_to_hsv(px[0], px[1], px[2], &h, &s, &v);
      h += hue;
      h -= floorf(h);
      hsv_to_rgb(h, s, v, &px[0], &px[1], &px[2]);
      break;
    }
  }
}

// The Gaussian blur's weights: radius ceil(3 sigma) (at least 1), normalised in double.
struct GaussianKernel {
  int radius;
  float sigma;
  double total;
  BAM_HD float raw(int k) const { return expf(-0.5f * k * k / (sigma * sigma)); }
  BAM_HD float weight(int k) const { return static_cast<float>(static_cast<double>(raw(k)) / total); }
};

BAM_HD GaussianKernel gaussian_kernel(float sigma) {
  GaussianKernel g;
  g.sigma = sigma;
  g.radius = static_cast<int>(ceilf(3 * sigma));
  if (g.radius < 1) g.radius = 1;
  g.total = 0;
  for (int k = -g.radius; k <= g.radius; ++k) g.total += g.raw(k);
  return g;
}

}  // namespace bam::data::augment_math
