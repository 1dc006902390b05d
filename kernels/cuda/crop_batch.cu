// Multi-crop augmentation kernels: one thread per output element of one stage, blockIdx.y the
// crop. Each stage's per-thread function is also run by the host emulator. The arithmetic mirrors
// data/augment.cpp operation for operation (float, in the same order), so that with -fmad=false
// the GPU crops equal the CPU crops up to expf's last bit.
#include <cmath>

#include "engine/cuda_check.h"
#include "kernels/cuda/crop_batch.h"
#include "kernels/cuda/device_host.cuh"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

// PIL's bicubic filter, a = -0.5.
BAM_HD double pil_bicubic(double x) {
  const double a = -0.5;
  x = x < 0 ? -x : x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// The taps of output coordinate o along one axis (resample_taps in data/augment.cpp): first
// source index, count, and the normaliser; weight(k) = float(double(float(w_k)) / total).
struct Taps {
  int lo, hi;
  double center, filter_scale, total;
  BAM_HD float weight(int k) const {
    return static_cast<float>(static_cast<double>(static_cast<float>(pil_bicubic((k - center + 0.5) / filter_scale))) /
                              total);
  }
};

BAM_HD Taps taps_for(double x0, double scale, int off, int lim, int in_limit, int o) {
  Taps t;
  const int coord = clamp_to(o + off, 0, lim);
  t.filter_scale = scale > 1.0 ? scale : 1.0;
  const double support = 2.0 * t.filter_scale;
  t.center = x0 + (coord + 0.5) * scale;
  t.lo = static_cast<int>(t.center - support + 0.5);
  if (t.lo < 0) t.lo = 0;
  t.hi = static_cast<int>(t.center + support + 0.5);
  if (t.hi > in_limit) t.hi = in_limit;
  // As on the CPU, the normaliser sums the weights in double, before their rounding to float.
  t.total = 0;
  for (int k = t.lo; k < t.hi; ++k) t.total += pil_bicubic((k - t.center + 0.5) / t.filter_scale);
  if (t.total == 0) t.total = 1;  // the CPU leaves the weights alone then
  return t;
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

// One jitter adjustment on one pixel; `mean` is the crop's mean grey (contrast only).
BAM_HD void adjust(float* px, int op, const CropTask& t, float mean) {
  switch (op) {
    case 0:
      for (int c = 0; c < 3; ++c) px[c] = clamp255f(px[c] * t.brightness);
      break;
    case 1:
      for (int c = 0; c < 3; ++c) px[c] = clamp255f(mean + t.contrast * (px[c] - mean));
      break;
    case 2: {
      const float gray = luma(px);
      for (int c = 0; c < 3; ++c) px[c] = clamp255f(gray + t.saturation * (px[c] - gray));
      break;
    }
    default: {
      float h, s, v;
      rgb_to_hsv(px[0], px[1], px[2], &h, &s, &v);
      h += t.hue;
      h -= floorf(h);
      hsv_to_rgb(h, s, v, &px[0], &px[1], &px[2]);
      break;
    }
  }
}

BAM_HD int contrast_position(const CropTask& t) {
  for (int k = 0; k < 4; ++k)
    if (t.order[k] == 1) return k;
  return 4;
}

BAM_HD uint16_t bf16_bits(float v) {
  uint32_t bits;
  memcpy(&bits, &v, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Solarise, normalise and store one pixel into the CHW output.
BAM_HD void finish_pixel(float* px, const CropTask& t, int S, int64_t e, const CropNormalize& n, DType out_dtype,
                         void* out) {
  const int64_t plane = int64_t{S} * S, base = t.out_index * 3 * plane;
  for (int c = 0; c < 3; ++c) {
    float v = px[c];
    if (t.solarize && v >= 128.0f) v = 255.0f - v;
    const float y = v * n.scale[c] - n.shift[c];
    if (out_dtype == DType::bf16) static_cast<uint16_t*>(out)[base + c * plane + e] = bf16_bits(y);
    else static_cast<float*>(out)[base + c * plane + e] = y;
  }
}

struct Stage {
  const CropTask* tasks;
  int S;
  const uint8_t* rgb;
  CropNormalize normalize;
  CropScratch scratch;
  DType out_dtype;
  void* out;
};

// 1. Horizontal pass: source row (row_lo + r), output column x, clamped to [0, 255].
BAM_HD void resize_rows(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  if (e >= int64_t{t.row_hi - t.row_lo} * s.S) return;
  const int r = static_cast<int>(e / s.S), x = static_cast<int>(e % s.S);
  const Taps taps = taps_for(t.x0, t.scale_x, t.off_x, t.lim_x, t.src_w, x);
  const uint8_t* line = s.rgb + t.src_offset + (int64_t{t.row_lo + r} * t.src_w) * 3;
  float acc[3] = {0, 0, 0};
  for (int k = taps.lo; k < taps.hi; ++k) {
    const float w = taps.weight(k);
    for (int ch = 0; ch < 3; ++ch) acc[ch] += w * line[k * 3 + ch];
  }
  float* mid = s.scratch.scratch + t.mid_offset + e * 3;
  for (int ch = 0; ch < 3; ++ch) mid[ch] = clamp255f(acc[ch]);
}

// 2. Vertical pass (reading the flipped column), then the jitter steps before contrast.
BAM_HD void resize_cols(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  const int y = static_cast<int>(e / s.S), x = static_cast<int>(e % s.S);
  const int xs = t.flip ? s.S - 1 - x : x;
  const Taps taps = taps_for(t.y0, t.scale_y, t.off_y, t.lim_y, t.src_h, y);
  float px[3];
  for (int ch = 0; ch < 3; ++ch) {
    float acc = 0;
    for (int k = taps.lo; k < taps.hi; ++k)
      acc += taps.weight(k) * s.scratch.scratch[t.mid_offset + ((int64_t{k} - t.row_lo) * s.S + xs) * 3 + ch];
    px[ch] = clamp255f(acc);
  }
  if (t.jitter)
    for (int k = 0; k < contrast_position(t); ++k) adjust(px, t.order[k], t, 0);
  float* dst = s.scratch.pixels + (int64_t{c} * s.S * s.S + e) * 3;
  for (int ch = 0; ch < 3; ++ch) dst[ch] = px[ch];
}

// 3. Grey-level sum of row y (crops with jitter).
BAM_HD void row_sum(const Stage& s, int c, int64_t y) {
  const CropTask& t = s.tasks[c];
  if (!t.jitter) return;
  const float* row = s.scratch.pixels + (int64_t{c} * s.S + y) * s.S * 3;
  double total = 0;
  for (int x = 0; x < s.S; ++x) total += luma(row + 3 * x);
  s.scratch.row_sums[int64_t{c} * s.S + y] = total;
}

// 4. The crop's mean grey level.
BAM_HD void crop_mean(const Stage& s, int c) {
  if (!s.tasks[c].jitter) return;
  double total = 0;
  for (int y = 0; y < s.S; ++y) total += s.scratch.row_sums[int64_t{c} * s.S + y];
  s.scratch.means[c] = static_cast<float>(total / (int64_t{s.S} * s.S));
}

// 5. Contrast and the jitter steps after it, grayscale; crops without blur finish here.
BAM_HD void colour_rest(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  float* px = s.scratch.pixels + (int64_t{c} * s.S * s.S + e) * 3;
  float v[3] = {px[0], px[1], px[2]};
  if (t.jitter)
    for (int k = contrast_position(t); k < 4; ++k) adjust(v, t.order[k], t, s.scratch.means[c]);
  if (t.grayscale) v[0] = v[1] = v[2] = luma(v);
  if (t.blur_sigma > 0) {
    for (int ch = 0; ch < 3; ++ch) px[ch] = v[ch];
  } else {
    finish_pixel(v, t, s.S, e, s.normalize, s.out_dtype, s.out);
  }
}

// The blur's weights (gaussian_blur in data/augment.cpp): radius ceil(3 sigma), normalised in double.
struct Gaussian {
  int radius;
  float sigma;
  double total;
  BAM_HD float raw(int k) const { return expf(-0.5f * k * k / (sigma * sigma)); }
  BAM_HD float weight(int k) const { return static_cast<float>(static_cast<double>(raw(k)) / total); }
};

BAM_HD Gaussian gaussian_for(float sigma) {
  Gaussian g;
  g.sigma = sigma;
  g.radius = static_cast<int>(ceilf(3 * sigma));
  if (g.radius < 1) g.radius = 1;
  g.total = 0;
  for (int k = -g.radius; k <= g.radius; ++k) g.total += g.raw(k);
  return g;
}

// 6. Horizontal blur into the scratch (edge pixels repeated).
BAM_HD void blur_rows(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  if (!(t.blur_sigma > 0)) return;
  const Gaussian g = gaussian_for(t.blur_sigma);
  const int y = static_cast<int>(e / s.S), x = static_cast<int>(e % s.S);
  const float* row = s.scratch.pixels + (int64_t{c} * s.S + y) * s.S * 3;
  float* dst = s.scratch.scratch + (int64_t{c} * s.S * s.S + e) * 3;
  for (int ch = 0; ch < 3; ++ch) {
    float acc = 0;
    for (int k = -g.radius; k <= g.radius; ++k) acc += g.weight(k) * row[clamp_to(x + k, 0, s.S - 1) * 3 + ch];
    dst[ch] = acc;
  }
}

// 7. Vertical blur, solarise, normalise, store.
BAM_HD void blur_cols_finish(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  if (!(t.blur_sigma > 0)) return;
  const Gaussian g = gaussian_for(t.blur_sigma);
  const int y = static_cast<int>(e / s.S), x = static_cast<int>(e % s.S);
  const float* plane = s.scratch.scratch + int64_t{c} * s.S * s.S * 3;
  float v[3];
  for (int ch = 0; ch < 3; ++ch) {
    float acc = 0;
    for (int k = -g.radius; k <= g.radius; ++k)
      acc += g.weight(k) * plane[(int64_t{clamp_to(y + k, 0, s.S - 1)} * s.S + x) * 3 + ch];
    v[ch] = acc;
  }
  finish_pixel(v, t, s.S, e, s.normalize, s.out_dtype, s.out);
}

enum class StageId { resize_rows, resize_cols, row_sum, crop_mean, colour_rest, blur_rows, blur_cols_finish };

BAM_HD void run_stage(StageId id, const Stage& s, int c, int64_t e) {
  switch (id) {
    case StageId::resize_rows: resize_rows(s, c, e); break;
    case StageId::resize_cols: resize_cols(s, c, e); break;
    case StageId::row_sum: row_sum(s, c, e); break;
    case StageId::crop_mean: crop_mean(s, c); break;
    case StageId::colour_rest: colour_rest(s, c, e); break;
    case StageId::blur_rows: blur_rows(s, c, e); break;
    case StageId::blur_cols_finish: blur_cols_finish(s, c, e); break;
  }
}

template <StageId id>
__global__ void stage_kernel(Stage s, int64_t per_crop) {
  const int c = blockIdx.y;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per_crop; e += int64_t(gridDim.x) * blockDim.x)
    run_stage(id, s, c, e);
}

// Elements per crop of each stage, in launch order.
struct StagePlan {
  StageId id;
  int64_t per_crop;
};

void stage_list(int S, int max_rows, StagePlan* plan) {
  const int64_t pixels = int64_t{S} * S;
  plan[0] = {StageId::resize_rows, int64_t{max_rows} * S};
  plan[1] = {StageId::resize_cols, pixels};
  plan[2] = {StageId::row_sum, S};
  plan[3] = {StageId::crop_mean, 1};
  plan[4] = {StageId::colour_rest, pixels};
  plan[5] = {StageId::blur_rows, pixels};
  plan[6] = {StageId::blur_cols_finish, pixels};
}
constexpr int kStages = 7;

template <StageId id>
void launch_stage(const Stage& s, int count, int64_t per_crop, cudaStream_t stream) {
  const int64_t blocks = (per_crop + kBlock - 1) / kBlock;
  dim3 grid(static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 4096 ? 4096 : blocks)), static_cast<unsigned>(count));
  stage_kernel<id><<<grid, kBlock, 0, stream>>>(s, per_crop);
  BAM_CUDA_CHECK_LAUNCH();
}

Stage make_stage(const CropTask* tasks, int S, const uint8_t* rgb, const CropNormalize& normalize,
                 const CropScratch& scratch, DType out_dtype, void* out) {
  BAM_CHECK(out_dtype == DType::f32 || out_dtype == DType::bf16, "crop_batch_render: output dtype {} (f32 or bf16)",
            dtype_name(out_dtype));
  return Stage{tasks, S, rgb, normalize, scratch, out_dtype, out};
}

}  // namespace

void crop_batch_render(const CropTask* tasks, int count, int S, int max_rows, const uint8_t* rgb,
                       const CropNormalize& normalize, const CropScratch& scratch, DType out_dtype, void* out,
                       void* stream) {
  if (count == 0) return;
  BAM_CHECK(count <= 65535, "crop_batch_render: {} crops in one group (at most 65535)", count);
  const Stage s = make_stage(tasks, S, rgb, normalize, scratch, out_dtype, out);
  StagePlan plan[kStages];
  stage_list(S, max_rows, plan);
  auto st = static_cast<cudaStream_t>(stream);
  launch_stage<StageId::resize_rows>(s, count, plan[0].per_crop, st);
  launch_stage<StageId::resize_cols>(s, count, plan[1].per_crop, st);
  launch_stage<StageId::row_sum>(s, count, plan[2].per_crop, st);
  launch_stage<StageId::crop_mean>(s, count, plan[3].per_crop, st);
  launch_stage<StageId::colour_rest>(s, count, plan[4].per_crop, st);
  launch_stage<StageId::blur_rows>(s, count, plan[5].per_crop, st);
  launch_stage<StageId::blur_cols_finish>(s, count, plan[6].per_crop, st);
}

void crop_batch_render_emulated(const CropTask* tasks, int count, int S, int max_rows, const uint8_t* rgb,
                                const CropNormalize& normalize, const CropScratch& scratch, DType out_dtype,
                                void* out) {
  const Stage s = make_stage(tasks, S, rgb, normalize, scratch, out_dtype, out);
  StagePlan plan[kStages];
  stage_list(S, max_rows, plan);
  for (const StagePlan& p : plan)
    for (int c = 0; c < count; ++c)
      for (int64_t e = 0; e < p.per_crop; ++e) run_stage(p.id, s, c, e);
}

}  // namespace bam::cuda_kernels
