// Planning one batch of the GPU data path: crop rectangles, IDCT block rectangles, buffer offsets.
#include "data/gpu_batch_plan.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "data/augment_math.h"
#include "engine/error.h"

namespace bam::data {

using cuda_kernels::CropTask;

CropTask crop_task_from_params(const CropParams& p, int src_w, int src_h, int64_t out_index) {
  CropTask t{};
  t.src_w = src_w;
  t.src_h = src_h;
  t.x0 = p.left;
  t.y0 = p.top;
  t.scale_x = static_cast<double>(p.width) / p.out_size;
  t.scale_y = static_cast<double>(p.height) / p.out_size;
  t.off_x = t.off_y = 0;
  t.lim_x = t.lim_y = p.out_size - 1;
  t.clip_x0 = std::max(p.left, 0);
  t.clip_x1 = std::min(p.left + p.width, src_w);
  t.clip_y0 = std::max(p.top, 0);
  t.clip_y1 = std::min(p.top + p.height, src_h);
  t.out_index = out_index;
  t.flip = p.flip;
  t.jitter = p.jitter;
  t.grayscale = p.grayscale;
  t.solarize = p.solarize;
  t.brightness = p.brightness;
  t.contrast = p.contrast;
  t.saturation = p.saturation;
  t.hue = p.hue;
  for (int k = 0; k < 4; ++k) t.order[k] = p.jitter_order[k];
  t.blur_sigma = p.blur_sigma;
  t.filter = p.bilinear ? augment_math::kBilinear : augment_math::kBicubic;
  return t;
}

CropTask eval_crop_task(int w, int h, int size, double eval_resize_ratio, int64_t out_index) {
  const EvalGeometry g = eval_geometry(w, h, size, eval_resize_ratio);
  const int ow = g.resized_w, oh = g.resized_h;
  CropTask t{};
  t.src_w = w;
  t.src_h = h;
  t.x0 = t.y0 = 0;
  t.scale_x = static_cast<double>(w) / ow;
  t.scale_y = static_cast<double>(h) / oh;
  t.off_x = g.left;
  t.off_y = g.top;
  t.lim_x = ow - 1;
  t.lim_y = oh - 1;
  t.clip_x0 = t.clip_y0 = 0;
  t.clip_x1 = w;
  t.clip_y1 = h;
  t.out_index = out_index;
  for (int k = 0; k < 4; ++k) t.order[k] = k;
  t.brightness = t.contrast = t.saturation = 1;
  return t;
}

cuda_kernels::CropNormalize crop_normalize(const AugmentRecipe& r) {
  cuda_kernels::CropNormalize n{};
  for (int c = 0; c < 3; ++c) {
    n.scale[c] = 1.0f / (255.0f * r.std[c]);
    n.shift[c] = r.mean[c] / r.std[c];
  }
  return n;
}

std::vector<std::vector<GpuBatchCrop>> multi_crop_tasks(const AugmentRecipe& recipe,
                                                        const std::vector<std::pair<int, int>>& sizes,
                                                        const std::vector<int64_t>& dataset_indices, uint64_t seed,
                                                        int64_t epoch, const ObjectBoxes* boxes, int64_t first_index,
                                                        const std::vector<int64_t>& crop_keys) {
  BAM_CHECK(sizes.size() == dataset_indices.size(), "multi_crop_tasks: {} sizes for {} images", sizes.size(),
            dataset_indices.size());
  BAM_CHECK(crop_keys.empty() || crop_keys.size() == sizes.size(), "multi_crop_tasks: {} crop keys for {} images",
            crop_keys.size(), sizes.size());
  const std::vector<int64_t>& keys = crop_keys.empty() ? dataset_indices : crop_keys;
  const int64_t B = static_cast<int64_t>(sizes.size());
  std::vector<std::vector<GpuBatchCrop>> groups(recipe.local_crops > 0 ? 2 : 1);
  std::vector<std::optional<CropPlacement>> placements(static_cast<size_t>(B));
  if (boxes)
    for (int64_t b = 0; b < B; ++b) placements[b] = boxes->placement(epoch, dataset_indices[b]);
  for (int64_t v = 0; v < recipe.views(); ++v) {
    const bool global = v < recipe.global_crops;
    const int64_t row_view = global ? v : v - recipe.global_crops;
    for (int64_t b = 0; b < B; ++b) {
      const auto [w, h] = sizes[b];
      CropParams p =
          sample_crop(recipe, w, h, seed, static_cast<uint32_t>(epoch), static_cast<uint32_t>(first_index + keys[b]),
                      static_cast<uint32_t>(v), placements[b] ? &*placements[b] : nullptr);
      groups[global ? 0 : 1].push_back({static_cast<int>(b), crop_task_from_params(p, w, h, row_view * B + b)});
    }
  }
  return groups;
}

std::vector<std::vector<GpuBatchCrop>> eval_crop_tasks(const AugmentRecipe& recipe,
                                                       const std::vector<std::pair<int, int>>& sizes, int size,
                                                       bool whole_image) {
  std::vector<std::vector<GpuBatchCrop>> groups(1);
  for (size_t b = 0; b < sizes.size(); ++b) {
    const auto [w, h] = sizes[b];
    const auto row = static_cast<int64_t>(b);
    groups[0].push_back({static_cast<int>(b), whole_image
                                                  ? crop_task_from_params(whole_image_params(w, h, size), w, h, row)
                                                  : eval_crop_task(w, h, size, recipe.eval_resize_ratio, row)});
  }
  return groups;
}

GpuBatchImage prepare_image_for_gpu(const uint8_t* bytes, size_t size, const std::string& name,
                                    const JpegCoefficientAllocator& allocate, DecodedImage* pixels,
                                    std::vector<std::string>* warnings) {
  GpuBatchImage image;
  const ImageDecodeOptions options = loader_decode_options();
  const bool jpeg = size >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8;
  // The kernels do not rotate, so an Exif-oriented JPEG is decoded (and turned upright) on the CPU.
  // The quick scan reads the markers before the first scan; an Exif segment after it (before EOI,
  // or between the scans of a multi-scan file) shows only in the full parse's layout.
  if (jpeg && read_jpeg_exif_orientation(bytes, size) == 1) {
    std::vector<std::string> found;  // this decode's warnings, passed on when it is kept
    try {
      image.layout = decode_jpeg_layout(bytes, size, name, allocate, &found, options);  // as decode_image does
      refuse_if_extreme_aspect(image.layout.width, image.layout.height, name);
      if (image.layout.exif_orientation == 1) {
        image.width = image.layout.width;
        image.height = image.layout.height;
        image.decode_on_gpu = true;
        if (warnings) warnings->insert(warnings->end(), found.begin(), found.end());
        return image;
      }
      image.layout = JpegLayout{};  // its coefficients go unused; the CPU decode below reports again
    } catch (const UnsupportedJpegError&) {
      // progressive, CMYK, 12-bit, ...: the CPU decodes it below
    }
  }
  *pixels = decode_image(bytes, size, name, options);
  if (warnings) warnings->insert(warnings->end(), pixels->warnings.begin(), pixels->warnings.end());
  image.width = pixels->width;
  image.height = pixels->height;
  return image;
}

namespace {

// First and one-past-last source index of output coordinate o's taps (resample_taps).
void tap_range(double x0, double scale, int off, int lim, int clip_lo, int clip_hi, int o, int filter, int* lo,
               int* hi) {
  const augment_math::ResampleWindow w =
      augment_math::resample_window(x0, scale, std::clamp(o + off, 0, lim), clip_lo, clip_hi, filter);
  *lo = w.lo;
  *hi = w.hi;
}

}  // namespace

PixelRect crop_source_rect(const CropTask& t, int S) {
  PixelRect r;
  int lo, hi;
  tap_range(t.x0, t.scale_x, t.off_x, t.lim_x, t.clip_x0, t.clip_x1, 0, t.filter, &r.x0, &hi);
  tap_range(t.x0, t.scale_x, t.off_x, t.lim_x, t.clip_x0, t.clip_x1, S - 1, t.filter, &lo, &r.x1);
  tap_range(t.y0, t.scale_y, t.off_y, t.lim_y, t.clip_y0, t.clip_y1, 0, t.filter, &r.y0, &hi);
  tap_range(t.y0, t.scale_y, t.off_y, t.lim_y, t.clip_y0, t.clip_y1, S - 1, t.filter, &lo, &r.y1);
  return r;
}

GpuBatchPlan plan_gpu_batch(const std::vector<GpuBatchImage>& images, const std::vector<int>& sizes,
                            const std::vector<std::vector<GpuBatchCrop>>& crops) {
  BAM_CHECK(sizes.size() == crops.size(), "plan_gpu_batch: {} sizes for {} crop groups", sizes.size(), crops.size());
  GpuBatchPlan plan;
  const size_t n = images.size();
  plan.rects.assign(n, PixelRect{});
  std::vector<bool> seen(n, false);
  for (size_t g = 0; g < crops.size(); ++g) {
    for (const GpuBatchCrop& c : crops[g]) {
      BAM_CHECK(c.image >= 0 && static_cast<size_t>(c.image) < n, "plan_gpu_batch: crop of image {} of {}",
                c.image, n);
      const GpuBatchImage& im = images[c.image];
      BAM_CHECK(c.task.src_w == im.width && c.task.src_h == im.height,
                "plan_gpu_batch: crop made for {}x{}, image {} is {}x{}", c.task.src_w, c.task.src_h, c.image,
                im.width, im.height);
      PixelRect r = crop_source_rect(c.task, sizes[g]);
      PixelRect& u = plan.rects[c.image];
      if (!seen[c.image]) {
        u = r;
        seen[c.image] = true;
      } else {
        u = {std::min(u.x0, r.x0), std::min(u.y0, r.y0), std::max(u.x1, r.x1), std::max(u.y1, r.y1)};
      }
    }
  }

  plan.rgb_offsets.resize(n);
  plan.plane_offsets.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const GpuBatchImage& im = images[i];
    plan.rgb_offsets[i] = plan.rgb_bytes;
    plan.rgb_bytes += int64_t{im.width} * im.height * 3;
    plan.rgb_bytes = (plan.rgb_bytes + 15) / 16 * 16;
    plan.plane_offsets[i] = plan.plane_bytes;
    if (!im.decode_on_gpu || plan.rects[i].empty()) continue;
    const JpegLayout& L = im.layout;
    BAM_CHECK(L.width == im.width && L.height == im.height, "plan_gpu_batch: layout {}x{} for image {} of {}x{}",
              L.width, L.height, i, im.width, im.height);
    const PixelRect& rect = plan.rects[i];
    cuda_kernels::JpegPixelTask pt{};
    pt.first_pixel = plan.total_pixels;
    pt.rgb_offset = plan.rgb_offsets[i];
    pt.width = im.width;
    pt.height = im.height;
    pt.x0 = rect.x0;
    pt.y0 = rect.y0;
    pt.rect_w = rect.x1 - rect.x0;
    pt.color_space = static_cast<int32_t>(L.color_space);
    pt.num_components = L.num_components;
    for (int c = 0; c < L.num_components; ++c) {
      const JpegComponent& comp = L.components[c];
      cuda_kernels::JpegPlaneView& view = pt.planes[c];
      view.plane_offset = plan.plane_bytes;
      view.stride = comp.blocks_w * 8;
      view.width = comp.width;
      view.height = comp.height;
      view.method = jpeg_upsample_method(L, c, &view.ratio_h, &view.ratio_v);
      // The samples the upsampler reads for the rectangle: the triangle filters reach one sample
      // beyond the nearest ones, clamped to the samples that carry data.
      const int sx0 = std::clamp(rect.x0 / view.ratio_h - 1, 0, comp.width - 1);
      const int sx1 = std::clamp((rect.x1 - 1) / view.ratio_h + 1, 0, comp.width - 1);
      const int sy0 = std::clamp(rect.y0 / view.ratio_v - 1, 0, comp.height - 1);
      const int sy1 = std::clamp((rect.y1 - 1) / view.ratio_v + 1, 0, comp.height - 1);
      cuda_kernels::JpegBlockTask bt{};
      bt.first_block = plan.total_blocks;
      bt.coef_offset = im.coef_offset + comp.coef_offset;
      bt.plane_offset = plan.plane_bytes;
      bt.blocks_w = comp.blocks_w;
      bt.bx0 = sx0 / 8;
      bt.by0 = sy0 / 8;
      bt.rect_w = sx1 / 8 - bt.bx0 + 1;
      std::copy(std::begin(comp.quant), std::end(comp.quant), bt.quant);
      plan.total_blocks += int64_t{bt.rect_w} * (sy1 / 8 - bt.by0 + 1);
      plan.block_tasks.push_back(bt);
      plan.plane_bytes += int64_t{comp.blocks_w} * 8 * comp.blocks_h * 8;
    }
    plan.plane_bytes = (plan.plane_bytes + 15) / 16 * 16;
    plan.total_pixels += int64_t{pt.rect_w} * (rect.y1 - rect.y0);
    plan.pixel_tasks.push_back(pt);
  }

  for (size_t g = 0; g < crops.size(); ++g) {
    GpuCropGroup group;
    group.S = sizes[g];
    const int S = sizes[g];
    int64_t mid = 0;
    for (const GpuBatchCrop& c : crops[g]) {
      CropTask t = c.task;
      t.src_offset = plan.rgb_offsets[c.image];
      int lo, hi;
      tap_range(t.y0, t.scale_y, t.off_y, t.lim_y, t.clip_y0, t.clip_y1, 0, t.filter, &t.row_lo, &hi);
      tap_range(t.y0, t.scale_y, t.off_y, t.lim_y, t.clip_y0, t.clip_y1, S - 1, t.filter, &lo, &t.row_hi);
      t.row_hi = std::max(t.row_hi, t.row_lo);
      t.mid_offset = mid;
      mid += int64_t{t.row_hi - t.row_lo} * S * 3;
      group.max_rows = std::max(group.max_rows, t.row_hi - t.row_lo);
      group.crops.push_back(t);
    }
    group.pixel_floats = static_cast<int64_t>(group.crops.size()) * S * S * 3;
    group.scratch_floats = std::max(mid, group.pixel_floats);
    plan.groups.push_back(std::move(group));
  }
  return plan;
}

}  // namespace bam::data
