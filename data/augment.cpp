// Multi-crop augmentation on the CPU: parameter sampling from Philox and the pixel pipeline.
#include "data/augment.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "data/augment_math.h"
#include "data/augment_pixels.h"
#include "engine/philox.h"
#include "kernels/cpu/cpu_features.h"

namespace bam::data {

uint32_t augment_bits(uint64_t seed, uint32_t epoch, uint32_t image, uint32_t crop, AugmentPurpose purpose,
                      uint32_t draw) {
  PhiloxBlock block = philox4x32_10(
      {{image, epoch, (crop & 0xffffu) | (static_cast<uint32_t>(purpose) << 16), draw / 4}}, philox_key(seed));
  return block.w[draw % 4];
}

float augment_uniform(uint64_t seed, uint32_t epoch, uint32_t image, uint32_t crop, AugmentPurpose purpose,
                      uint32_t draw) {
  return uniform_from_bits(augment_bits(seed, epoch, image, crop, purpose, draw));
}

namespace {

// Python's round(): halves go to the even neighbour (torchvision rounds crop sizes with it).
int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

struct Draws {
  uint64_t seed;
  uint32_t epoch, image, crop;
  float operator()(AugmentPurpose p, uint32_t draw) const { return augment_uniform(seed, epoch, image, crop, p, draw); }
  float uniform(AugmentPurpose p, uint32_t draw, double lo, double hi) const {
    return static_cast<float>(lo + (hi - lo) * (*this)(p, draw));
  }
};

// ContrastiveCrop's corner along one side of `extent` pixels for a crop of `size`: from the box's
// near edge `lo` to its far edge `hi` (fractions), Beta-distributed.
int placed_corner(int extent, int size, float lo, float hi, double beta) {
  auto clamp = [&](int v) { return std::clamp(v, 0, extent - size); };
  const int first = clamp(static_cast<int>(extent * static_cast<double>(lo)) - size / 2);
  const int last = clamp(static_cast<int>(extent * static_cast<double>(hi)) - size / 2);
  return first + static_cast<int>((last - first) * beta);
}

}  // namespace

void random_resized_box(int width, int height, double scale_min, double scale_max, uint64_t seed, uint32_t epoch,
                        uint32_t image, uint32_t crop, int* top, int* left, int* box_h, int* box_w,
                        const CropPlacement* placement) {
  Draws draw{seed, epoch, image, crop};
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  for (uint32_t attempt = 0; attempt < 10; ++attempt) {
    double target = area * draw.uniform(AugmentPurpose::geometry, 4 * attempt, scale_min, scale_max);
    double aspect = std::exp(draw.uniform(AugmentPurpose::geometry, 4 * attempt + 1, log_lo, log_hi));
    int w = round_half_even(std::sqrt(target * aspect));
    int h = round_half_even(std::sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      *box_h = h;
      *box_w = w;
      if (placement) {
        // Two Beta draws from their own stretches of the placement stream: rows, then columns.
        auto beta = [&](uint32_t first) {
          return beta_symmetric(placement->alpha, [&](uint32_t k) {
            return augment_bits(seed, epoch, image, crop, AugmentPurpose::placement, first + k);
          });
        };
        *top = placed_corner(height, h, placement->box.top, placement->box.bottom, beta(0));
        *left = placed_corner(width, w, placement->box.left, placement->box.right, beta(1024));
        return;
      }
      *top = std::min(height - h, static_cast<int>(draw(AugmentPurpose::geometry, 4 * attempt + 2) * (height - h + 1)));
      *left = std::min(width - w, static_cast<int>(draw(AugmentPurpose::geometry, 4 * attempt + 3) * (width - w + 1)));
      return;
    }
  }
  // Fallback: the whole image, clamped to the aspect-ratio range, centred.
  double ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (ratio < 3.0 / 4.0) {
    h = round_half_even(w / (3.0 / 4.0));
  } else if (ratio > 4.0 / 3.0) {
    w = round_half_even(h * (4.0 / 3.0));
  }
  *box_h = h;
  *box_w = w;
  *top = (height - h) / 2;
  *left = (width - w) / 2;
}

CropParams whole_image_params(int width, int height, int size) {
  CropParams p;
  p.height = height;
  p.width = width;
  p.out_size = size;
  p.bilinear = true;
  return p;
}

CropParams sample_crop(const AugmentRecipe& r, int width, int height, uint64_t seed, uint32_t epoch, uint32_t image,
                       uint32_t crop, const CropPlacement* placement) {
  Draws draw{seed, epoch, image, crop};
  CropParams p;
  const bool global = crop < r.global_crops;
  p.out_size = static_cast<int>(global ? r.global_size : r.local_size);
  // ContrastiveCrop's global crops draw their scale up to the whole image, whatever the global
  // scale's upper bound (the official DataAugmentationCCrop: scale=(global_crops_scale[0], 1.)).
  const double global_max = placement ? 1.0 : r.global_scale_max;
  random_resized_box(width, height, global ? r.global_scale_min : r.local_scale_min,
                     global ? global_max : r.local_scale_max, seed, epoch, image, crop, &p.top, &p.left, &p.height,
                     &p.width, placement);
  p.flip = draw(AugmentPurpose::flip, 0) < 0.5f;
  if (r.crop_and_flip_only) {
    // The linear probe's RandomResizedCrop(224): torchvision's default filter, bilinear (DINO's
    // eval_linear, where the pretraining's crops are bicubic).
    p.bilinear = true;
    return p;
  }
  p.jitter = draw(AugmentPurpose::jitter, 0) < r.jitter_p;
  if (p.jitter) {
    p.brightness = draw.uniform(AugmentPurpose::jitter, 1, std::max(0.0, 1 - r.brightness), 1 + r.brightness);
    p.contrast = draw.uniform(AugmentPurpose::jitter, 2, std::max(0.0, 1 - r.contrast), 1 + r.contrast);
    p.saturation = draw.uniform(AugmentPurpose::jitter, 3, std::max(0.0, 1 - r.saturation), 1 + r.saturation);
    p.hue = draw.uniform(AugmentPurpose::jitter, 4, -r.hue, r.hue);
    // A random order of the four adjustments (Fisher-Yates).
    for (int i = 3; i > 0; --i) {
      int j = std::min(i, static_cast<int>(draw(AugmentPurpose::jitter, 5 + (3 - i)) * (i + 1)));
      std::swap(p.jitter_order[i], p.jitter_order[j]);
    }
  }
  p.grayscale = draw(AugmentPurpose::grayscale, 0) < r.grayscale_p;
  const bool even_global = global && crop % 2 == 0;
  double blur_p = global ? (even_global ? 1.0 : 0.1) : 0.5;
  if (draw(AugmentPurpose::blur, 0) < blur_p)
    p.blur_sigma = draw.uniform(AugmentPurpose::blur, 1, r.blur_sigma_min, r.blur_sigma_max);
  p.solarize = global && !even_global && draw(AugmentPurpose::solarize, 0) < 0.2f;
  return p;
}

// ---- pixels ---------------------------------------------------------------------------------------

namespace {

using namespace augment_math;

// Weights of one output coordinate over a run of input coordinates.
struct Taps {
  int first = 0;
  std::vector<float> weights;
};

// PIL's precompute_coeffs: the filter is stretched by the scale when shrinking (antialiasing).
// The taps of output coordinates `coords` of a resize of [in_start, in_start + in_size) to
// out_size samples (all of them when coords is empty), reading only [clip_lo, clip_hi).
std::vector<Taps> resample_taps(double in_start, double in_size, int clip_lo, int clip_hi, int out_size,
                                const std::vector<int>& coords = {}, int filter = kBicubic) {
  const double scale = in_size / out_size;
  std::vector<Taps> taps(coords.empty() ? out_size : coords.size());
  for (size_t i = 0; i < taps.size(); ++i) {
    const int o = coords.empty() ? static_cast<int>(i) : coords[i];
    const ResampleWindow w = resample_window(in_start, scale, o, clip_lo, clip_hi, filter);
    taps[i].first = w.lo;
    for (int k = w.lo; k < w.hi; ++k) taps[i].weights.push_back(w.weight(k));
  }
  return taps;
}

// Both passes for the output rows and columns whose taps are given: dst is rows.size() x
// cols.size() x 3. Each output value is computed the same way whichever others are computed, so
// a window of a resize equals the same window cut from the whole resize, bit for bit.
template <typename Src>
void resample_rows_cols(const Src* src, int src_h, int src_w, const std::vector<Taps>& rows,
                        const std::vector<Taps>& cols, float* dst) {
  const int out_h = static_cast<int>(rows.size()), out_w = static_cast<int>(cols.size());
  // Horizontal pass over only the source rows the vertical pass will read.
  int row_lo = src_h, row_hi = 0;
  for (const Taps& t : rows) {
    row_lo = std::min(row_lo, t.first);
    row_hi = std::max(row_hi, t.first + static_cast<int>(t.weights.size()));
  }
  row_hi = std::max(row_hi, row_lo);
  std::vector<float> mid(static_cast<size_t>(row_hi - row_lo) * out_w * 3);
  for (int y = row_lo; y < row_hi; ++y) {
    const Src* line = src + static_cast<size_t>(y) * src_w * 3;
    float* out = mid.data() + static_cast<size_t>(y - row_lo) * out_w * 3;
    for (int x = 0; x < out_w; ++x) {
      const Taps& t = cols[x];
      float r = 0, g = 0, b = 0;
      for (size_t k = 0; k < t.weights.size(); ++k) {
        const Src* px = line + (t.first + k) * 3;
        r += t.weights[k] * px[0];
        g += t.weights[k] * px[1];
        b += t.weights[k] * px[2];
      }
      // PIL stores each pass in 8 bits, so values are clamped to [0, 255] between passes.
      out[3 * x] = std::clamp(r, 0.0f, 255.0f);
      out[3 * x + 1] = std::clamp(g, 0.0f, 255.0f);
      out[3 * x + 2] = std::clamp(b, 0.0f, 255.0f);
    }
  }
  const int width = 3 * out_w;
  for (int y = 0; y < out_h; ++y) {
    const Taps& t = rows[y];
    const int count = static_cast<int>(t.weights.size());
    const float* first = mid.data() + static_cast<size_t>(t.first - row_lo) * width;
    float* out = dst + static_cast<size_t>(y) * width;
    // Eight values at a time, each summed over the taps in order as alone (eight independent
    // chains of additions instead of one).
    int x = 0;
    for (; x + 8 <= width; x += 8) {
      float acc[8] = {};
      for (int k = 0; k < count; ++k)
        for (int j = 0; j < 8; ++j) acc[j] += t.weights[k] * first[static_cast<size_t>(k) * width + x + j];
      for (int j = 0; j < 8; ++j) out[x + j] = std::clamp(acc[j], 0.0f, 255.0f);
    }
    for (; x < width; ++x) {
      float acc = 0;
      for (int k = 0; k < count; ++k) acc += t.weights[k] * first[static_cast<size_t>(k) * width + x];
      out[x] = std::clamp(acc, 0.0f, 255.0f);
    }
  }
}

// A resize of the box (top, left, box_h, box_w) of src to out_h x out_w. PIL's resize(box=...)
// reads the image around the box (clip_to_box false); torchvision's resized_crop, which cuts the
// box out first, reads only the box (true; its box is whole pixels).
template <typename Src>
void resize_any(const Src* src, int src_h, int src_w, double top, double left, double box_h, double box_w, float* dst,
                int out_h, int out_w, bool clip_to_box, int filter = kBicubic) {
  const auto clip = [clip_to_box](double start, double size, int limit, int* lo, int* hi) {
    *lo = clip_to_box ? std::max(static_cast<int>(start), 0) : 0;
    *hi = clip_to_box ? std::min(static_cast<int>(start + size), limit) : limit;
  };
  int y_lo, y_hi, x_lo, x_hi;
  clip(top, box_h, src_h, &y_lo, &y_hi);
  clip(left, box_w, src_w, &x_lo, &x_hi);
  resample_rows_cols(src, src_h, src_w, resample_taps(top, box_h, y_lo, y_hi, out_h, {}, filter),
                     resample_taps(left, box_w, x_lo, x_hi, out_w, {}, filter), dst);
}

// Whether the per-pixel steps take the AVX-512 loops (render_crop_use_avx512).
std::atomic<bool> g_pixels_avx512{true};

bool pixels_avx512() {
  static const bool has = cpu::cpu_has_avx512();
  return has && g_pixels_avx512.load(std::memory_order_relaxed);
}

// One jitter step over the whole crop (S x S pixels); contrast blends towards the crop's mean grey
// level, summed a row at a time and then over the rows, as the GPU's kernels sum it (in one
// sequence the double sum can round differently where dark pixels carry many bits).
void adjust(float* px, int S, int op, const CropParams& p) {
  const int n = S * S;
  float mean = 0;
  if (op == 1) {
    double total = 0;
    for (int y = 0; y < S; ++y) {
      double row = 0;
      for (int x = 0; x < S; ++x) row += luma(px + 3 * (y * S + x));
      total += row;
    }
    mean = static_cast<float>(total / n);
  }
  int done = 0;
  if (pixels_avx512())
    done = augment_detail::jitter_avx512(px, n, op, p.brightness, p.contrast, p.saturation, p.hue, mean);
  for (int i = done; i < n; ++i) jitter_pixel(px + 3 * i, op, p.brightness, p.contrast, p.saturation, p.hue, mean);
}

// Separable Gaussian with edge pixels repeated; radius ceil(3 sigma). Each row (then column) of a
// channel is first copied into `line` with its edge pixels repeated `radius` times on both sides, so
// the taps run over a plain array: the same products, added in the same order (k from -radius to
// radius), as indexing the crop with clamped coordinates.
void gaussian_blur(float* px, int size, float sigma) {
  const GaussianKernel g = gaussian_kernel(sigma);
  const int radius = g.radius, taps = 2 * radius + 1;
  std::vector<float> kernel(taps);
  for (int k = -radius; k <= radius; ++k) kernel[k + radius] = g.weight(k);
  std::vector<float> tmp(static_cast<size_t>(size) * size * 3), line(static_cast<size_t>(size) + 2 * radius);
  auto at = [size](int v) { return std::clamp(v, 0, size - 1); };
  // One line: `size` values `stride` apart from src, repeated at the edges, convolved into dst.
  auto blur_line = [&](const float* src, float* dst, int stride) {
    for (int i = 0; i < size + 2 * radius; ++i) line[i] = src[static_cast<size_t>(at(i - radius)) * stride];
    // Eight outputs at a time: each one's sum is a chain of dependent additions, and eight
    // independent chains (a vector's lanes) keep the adder busy.
    int x = 0;
    for (; x + 8 <= size; x += 8) {
      float acc[8] = {};
      for (int k = 0; k < taps; ++k)
        for (int j = 0; j < 8; ++j) acc[j] += kernel[k] * line[x + j + k];
      for (int j = 0; j < 8; ++j) dst[static_cast<size_t>(x + j) * stride] = acc[j];
    }
    for (; x < size; ++x) {
      float acc = 0;
      for (int k = 0; k < taps; ++k) acc += kernel[k] * line[x + k];
      dst[static_cast<size_t>(x) * stride] = acc;
    }
  };
  for (int y = 0; y < size; ++y)
    for (int c = 0; c < 3; ++c)
      blur_line(px + static_cast<size_t>(y) * size * 3 + c, tmp.data() + static_cast<size_t>(y) * size * 3 + c, 3);
  for (int x = 0; x < size; ++x)
    for (int c = 0; c < 3; ++c)
      blur_line(tmp.data() + static_cast<size_t>(x) * 3 + c, px + static_cast<size_t>(x) * 3 + c, size * 3);
}

void normalize_into(const float* hwc, int h, int w, const AugmentRecipe& r, float* out) {
  for (int c = 0; c < 3; ++c) {
    const float scale = 1.0f / (255.0f * r.std[c]), shift = r.mean[c] / r.std[c];
    float* plane = out + static_cast<size_t>(c) * h * w;
    for (int i = 0; i < h * w; ++i) plane[i] = hwc[3 * i + c] * scale - shift;
  }
}

}  // namespace

void resize_bicubic_aa(const float* src, int src_h, int src_w, double top, double left, double box_h, double box_w,
                       float* dst, int out_h, int out_w) {
  resize_any(src, src_h, src_w, top, left, box_h, box_w, dst, out_h, out_w, false);
}

void render_crop(const DecodedImage& image, const CropParams& p, const AugmentRecipe& recipe, float* out) {
  const int S = p.out_size, n = S * S;
  std::vector<float> px(static_cast<size_t>(n) * 3);
  resize_any(image.pixels.data(), image.height, image.width, p.top, p.left, p.height, p.width, px.data(), S, S, true,
             p.bilinear ? kBilinear : kBicubic);
  if (p.flip)
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S / 2; ++x)
        for (int c = 0; c < 3; ++c) std::swap(px[(y * S + x) * 3 + c], px[(y * S + S - 1 - x) * 3 + c]);
  if (p.jitter)
    for (int op : p.jitter_order) adjust(px.data(), S, op, p);
  if (p.grayscale) {
    const int done = pixels_avx512() ? augment_detail::grayscale_avx512(px.data(), n) : 0;
    for (int i = done; i < n; ++i) {
      float g = luma(&px[3 * i]);
      px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = g;
    }
  }
  if (p.blur_sigma > 0) gaussian_blur(px.data(), S, p.blur_sigma);
  if (p.solarize) {
    const int done = pixels_avx512() ? augment_detail::solarize_avx512(px.data(), n) : 0;
    for (size_t i = 3 * static_cast<size_t>(done); i < px.size(); ++i)
      if (px[i] >= 128.0f) px[i] = 255.0f - px[i];
  }
  normalize_into(px.data(), S, S, recipe, out);
}

void render_crop_use_avx512(bool use) { g_pixels_avx512.store(use, std::memory_order_relaxed); }

EvalGeometry eval_geometry(int w, int h, int size, double eval_resize_ratio) {
  EvalGeometry g;
  const int short_target = static_cast<int>(std::lround(size * eval_resize_ratio));
  if (w <= h) {
    g.resized_w = short_target;
    g.resized_h = static_cast<int>(static_cast<int64_t>(short_target) * h / w);
  } else {
    g.resized_h = short_target;
    g.resized_w = static_cast<int>(static_cast<int64_t>(short_target) * w / h);
  }
  g.top = round_half_even((g.resized_h - size) / 2.0);
  g.left = round_half_even((g.resized_w - size) / 2.0);
  return g;
}

void render_eval(const DecodedImage& image, int size, const AugmentRecipe& recipe, float* out) {
  const int w = image.width, h = image.height;
  const EvalGeometry g = eval_geometry(w, h, size, recipe.eval_resize_ratio);
  const int ow = g.resized_w, oh = g.resized_h;
  // The centre crop's rows and columns of the resized image (repeating its edge where the crop is
  // larger). Only they are resampled: the whole resize of a long thin image could take gigabytes.
  std::vector<int> rows(size), cols(size);
  for (int i = 0; i < size; ++i) {
    rows[i] = std::clamp(g.top + i, 0, oh - 1);
    cols[i] = std::clamp(g.left + i, 0, ow - 1);
  }
  std::vector<float> crop(static_cast<size_t>(size) * size * 3);
  if (ow == w && oh == h) {
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        for (int c = 0; c < 3; ++c)
          crop[(static_cast<size_t>(y) * size + x) * 3 + c] =
              image.pixels[(static_cast<size_t>(rows[y]) * w + cols[x]) * 3 + c];
  } else {
    resample_rows_cols(image.pixels.data(), h, w, resample_taps(0, h, 0, h, oh, rows),
                       resample_taps(0, w, 0, w, ow, cols), crop.data());
  }
  normalize_into(crop.data(), size, size, recipe, out);
}

}  // namespace bam::data
