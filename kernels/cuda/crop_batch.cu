// Multi-crop augmentation kernels: one thread per output element of one stage, blockIdx.y the
// crop (counted from the launch's first crop). Each stage's per-thread function is also run by the
// host emulator. The per-pixel arithmetic is the CPU path's own (data/augment_math.h), accumulated
// in the same order, so that with -fmad=false the GPU crops equal the CPU crops up to expf's last
// bit.
#include <algorithm>
#include <cmath>

#include "engine/cuda_check.h"
#include "kernels/cuda/crop_batch.h"
#include "kernels/cuda/device_host.cuh"
#include "kernels/cuda/numeric.cuh"
#include "data/augment_math.h"

namespace bam::cuda_kernels {
namespace {

using namespace data::augment_math;

// The resampling window of output coordinate o along one axis of a crop (see CropTask).
BAM_HD ResampleWindow window_for(double x0, double scale, int off, int lim, int clip_lo, int clip_hi, int o,
                                 int filter) {
  return resample_window(x0, scale, clamp_to(o + off, 0, lim), clip_lo, clip_hi, filter);
}

BAM_HD void adjust(float* px, int op, const CropTask& t, float mean) {
  jitter_pixel(px, op, t.brightness, t.contrast, t.saturation, t.hue, mean);
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
  const ResampleWindow taps = window_for(t.x0, t.scale_x, t.off_x, t.lim_x, t.clip_x0, t.clip_x1, x, t.filter);
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
  const ResampleWindow taps = window_for(t.y0, t.scale_y, t.off_y, t.lim_y, t.clip_y0, t.clip_y1, y, t.filter);
  float px[3] = {0, 0, 0};
  for (int k = taps.lo; k < taps.hi; ++k) {  // each channel accumulates over k in order, as on the CPU
    const float w = taps.weight(k);
    const float* mid = s.scratch.scratch + t.mid_offset + ((int64_t{k} - t.row_lo) * s.S + xs) * 3;
    for (int ch = 0; ch < 3; ++ch) px[ch] += w * mid[ch];
  }
  for (int ch = 0; ch < 3; ++ch) px[ch] = clamp255f(px[ch]);
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

// 6. Horizontal blur into the scratch (edge pixels repeated).
BAM_HD void blur_rows(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  if (!(t.blur_sigma > 0)) return;
  const GaussianKernel g = gaussian_kernel(t.blur_sigma);
  const int y = static_cast<int>(e / s.S), x = static_cast<int>(e % s.S);
  const float* row = s.scratch.pixels + (int64_t{c} * s.S + y) * s.S * 3;
  float acc[3] = {0, 0, 0};
  for (int k = -g.radius; k <= g.radius; ++k) {
    const float w = g.weight(k);
    const float* px = row + clamp_to(x + k, 0, s.S - 1) * 3;
    for (int ch = 0; ch < 3; ++ch) acc[ch] += w * px[ch];
  }
  float* dst = s.scratch.scratch + (int64_t{c} * s.S * s.S + e) * 3;
  for (int ch = 0; ch < 3; ++ch) dst[ch] = acc[ch];
}

// 7. Vertical blur, solarise, normalise, store.
BAM_HD void blur_cols_finish(const Stage& s, int c, int64_t e) {
  const CropTask& t = s.tasks[c];
  if (!(t.blur_sigma > 0)) return;
  const GaussianKernel g = gaussian_kernel(t.blur_sigma);
  const int y = static_cast<int>(e / s.S), x = static_cast<int>(e % s.S);
  const float* plane = s.scratch.scratch + int64_t{c} * s.S * s.S * 3;
  float v[3] = {0, 0, 0};
  for (int k = -g.radius; k <= g.radius; ++k) {
    const float w = g.weight(k);
    const float* px = plane + (int64_t{clamp_to(y + k, 0, s.S - 1)} * s.S + x) * 3;
    for (int ch = 0; ch < 3; ++ch) v[ch] += w * px[ch];
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
__global__ void stage_kernel(Stage s, int64_t per_crop, int first_crop) {
  const int c = first_crop + static_cast<int>(blockIdx.y);
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

// gridDim.y is the crop, which CUDA caps at 65535: larger groups (a big evaluation batch) go in
// launches of that many crops each.
template <StageId id>
void launch_stage(const Stage& s, int count, int64_t per_crop, cudaStream_t stream) {
  constexpr int kMaxGridY = 65535;
  const int64_t blocks = (per_crop + kBlock - 1) / kBlock;
  for (int first = 0; first < count; first += kMaxGridY) {
    dim3 grid(static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 4096 ? 4096 : blocks)),
              static_cast<unsigned>(std::min(kMaxGridY, count - first)));
    stage_kernel<id><<<grid, kBlock, 0, stream>>>(s, per_crop, first);
    BAM_CUDA_CHECK_LAUNCH();
  }
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
