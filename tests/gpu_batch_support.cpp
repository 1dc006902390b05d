// The GPU data-path test helpers: corpus, host batch, CPU reference crops, comparison.
#include "tests/gpu_batch_support.h"

#include <fmt/format.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/error.h"
#include "tests/jpeg_test_support.h"

namespace bam::test {

namespace {

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

}  // namespace

ImageFile encode(const std::string& name, int w, int h, int channels, int quality, uint64_t seed, bool png) {
  std::vector<uint8_t> px = synthetic_image(w, h, channels, seed);
  ImageFile f{name, {}};
  int ok = png ? stbi_write_png_to_func(append_bytes, &f.bytes, w, h, channels, px.data(), w * channels)
               : stbi_write_jpg_to_func(append_bytes, &f.bytes, w, h, channels, px.data(), quality);
  BAM_CHECK(ok && !f.bytes.empty(), "test corpus: cannot encode {}", name);
  return f;
}

std::vector<ImageFile> gpu_test_corpus(uint64_t seed) {
  return {
      encode("photo_500x375_q90_420.jpg", 500, 375, 3, 90, seed + 1),
      encode("odd_333x217_q95_444.jpg", 333, 217, 3, 95, seed + 2),
      encode("gray_97x61.jpg", 97, 61, 1, 85, seed + 3),
      encode("tall_64x300_q50_420.jpg", 64, 300, 3, 50, seed + 4),
      encode("tiny_3x2_q90.jpg", 3, 2, 3, 90, seed + 5),
      encode("pixels_120x90.png", 120, 90, 3, 0, seed + 6, true),
      encode("wide_257x33_q75.jpg", 257, 33, 3, 75, seed + 7),
  };
}

std::vector<ImageFile> cjpeg_fixtures() {
  std::vector<ImageFile> files;
  for (const char* name : {"cjpeg_181x127_h2v1.jpg", "cjpeg_181x127_h1v2.jpg", "cjpeg_181x127_rgb.jpg"})
    files.push_back({name, read_bytes(std::string(BAM_SOURCE_DIR) + "/tests/data/" + name)});
  return files;
}

std::vector<ImageFile> gpu_test_corpus_with_fixtures(uint64_t seed) {
  std::vector<ImageFile> files = gpu_test_corpus(seed), fixtures = cjpeg_fixtures();
  files.insert(files.end(), fixtures.begin(), fixtures.end());
  return files;
}

data::AugmentRecipe multi_crop_test_recipe() {
  data::AugmentRecipe r;
  r.global_crops = 2;
  r.local_crops = 6;
  r.global_scale_min = 0.25;
  return r;
}

data::GpuBatchImage prepare_file_for_gpu(const std::vector<uint8_t>& bytes, const std::string& name,
                                         std::vector<int16_t>* coefficients, data::DecodedImage* pixels,
                                         std::vector<std::string>* warnings) {
  return data::prepare_image_for_gpu(
      bytes.data(), bytes.size(), name,
      [&](const data::JpegLayout& layout) {
        coefficients->assign(static_cast<size_t>(layout.num_coefficients), 0);
        return coefficients->data();
      },
      pixels, warnings);
}

HostBatch prepare_host_batch(const std::vector<ImageFile>& files, const data::AugmentRecipe& recipe, uint64_t seed,
                             bool eval) {
  HostBatch b;
  b.recipe = recipe;
  b.eval = eval;
  b.seed = seed;
  std::vector<std::pair<int, int>> sizes;
  std::vector<int64_t> indices;
  for (const ImageFile& f : files) {
    std::vector<int16_t> coefficients;
    data::DecodedImage pixels;
    data::GpuBatchImage im = prepare_file_for_gpu(f.bytes, f.name, &coefficients, &pixels);
    if (im.decode_on_gpu) {
      im.coef_offset = static_cast<int64_t>(b.coefficients.size());
      b.coefficients.insert(b.coefficients.end(), coefficients.begin(), coefficients.end());
    }
    b.images.push_back(im);
    b.fallback.push_back(std::move(pixels));
    b.reference.push_back(data::decode_image(f.bytes.data(), f.bytes.size(), f.name));
    sizes.push_back({im.width, im.height});
    indices.push_back(static_cast<int64_t>(indices.size()) * 7 + 3);
  }
  if (eval) {
    b.crops = data::eval_crop_tasks(recipe, sizes, static_cast<int>(recipe.global_size));
    b.sizes = {static_cast<int>(recipe.global_size)};
  } else {
    b.crops = data::multi_crop_tasks(recipe, sizes, indices, seed, b.epoch);
    b.sizes = {static_cast<int>(recipe.global_size)};
    if (recipe.local_crops > 0) b.sizes.push_back(static_cast<int>(recipe.local_size));
  }
  b.plan = data::plan_gpu_batch(b.images, b.sizes, b.crops);
  return b;
}

std::vector<std::vector<float>> reference_crops(const HostBatch& batch) {
  std::vector<std::vector<float>> out;
  const int64_t B = static_cast<int64_t>(batch.images.size());
  for (size_t g = 0; g < batch.sizes.size(); ++g) {
    const int S = batch.sizes[g];
    const size_t per_crop = size_t(3) * S * S;
    std::vector<float> group(batch.crops[g].size() * per_crop);
    for (const data::GpuBatchCrop& c : batch.crops[g]) {
      const data::DecodedImage& image = batch.reference[c.image];
      float* dst = group.data() + c.task.out_index * per_crop;
      if (batch.eval) {
        data::render_eval(image, S, batch.recipe, dst);
      } else {
        const int64_t v = (g == 0 ? 0 : batch.recipe.global_crops) + c.task.out_index / B;
        data::CropParams p = data::sample_crop(batch.recipe, image.width, image.height, batch.seed, batch.epoch,
                                               static_cast<uint32_t>(c.image * 7 + 3), static_cast<uint32_t>(v));
        data::render_crop(image, p, batch.recipe, dst);
      }
    }
    out.push_back(std::move(group));
  }
  return out;
}

size_t decode_mismatches(const HostBatch& batch, size_t i, const std::vector<uint8_t>& rgb, size_t* checked) {
  const data::PixelRect& r = batch.plan.rects[i];
  const data::DecodedImage& ref = batch.reference[i];
  size_t mismatches = 0, compared = 0;
  for (int y = r.y0; y < r.y1; ++y)
    for (int x = r.x0; x < r.x1; ++x)
      for (int c = 0; c < 3; ++c, ++compared) {
        const size_t at = (size_t(y) * ref.width + x) * 3 + c;
        mismatches += rgb[batch.plan.rgb_offsets[i] + at] != ref.pixels[at];
      }
  if (checked) *checked = compared;
  return mismatches;
}

void place_fallback_pixels(const HostBatch& batch, uint8_t* rgb) {
  for (size_t i = 0; i < batch.images.size(); ++i)
    if (!batch.images[i].decode_on_gpu)
      std::copy(batch.fallback[i].pixels.begin(), batch.fallback[i].pixels.end(), rgb + batch.plan.rgb_offsets[i]);
}

CropComparison compare_crops(const std::vector<float>& expected, const std::vector<float>& actual) {
  BAM_CHECK(expected.size() == actual.size(), "compare_crops: {} vs {} values", expected.size(), actual.size());
  CropComparison c;
  c.values = expected.size();
  for (size_t i = 0; i < expected.size(); ++i) {
    double d = std::fabs(double(expected[i]) - double(actual[i]));
    if (!(d <= 1e-3)) ++c.beyond;
    if (!(d <= c.max_abs)) c.max_abs = std::isnan(d) ? INFINITY : d;
  }
  return c;
}

// Every task of the plan stays inside its own image's and component's memory (which lies inside the
// buffers the loader sizes from the plan): what an index bug in the plan would make a kernel read
// or write out of place on the GPU. The tasks are matched to their images in plan_gpu_batch's order
// (per GPU-decoded image with a non-empty rectangle: a block task per component, one pixel task).
// Returns false (after reporting) at the first task out of place, so that no kernel or emulator is
// run on a plan that would overrun.
bool plan_in_bounds(const HostBatch& b) {
  const data::GpuBatchPlan& plan = b.plan;
  const int64_t coefficients = static_cast<int64_t>(b.coefficients.size());
  size_t block_task = 0, pixel_task = 0;
  for (size_t i = 0; i < b.images.size(); ++i) {
    const data::GpuBatchImage& im = b.images[i];
    if (!im.decode_on_gpu || plan.rects[i].empty()) continue;
    const data::JpegLayout& L = im.layout;
    bool ok = block_task + L.num_components <= plan.block_tasks.size() && pixel_task < plan.pixel_tasks.size() &&
              plan.rgb_offsets[i] >= 0 && plan.rgb_offsets[i] + int64_t{im.width} * im.height * 3 <= plan.rgb_bytes;
    INFO("image " << i << " (" << im.width << "x" << im.height << ", " << L.num_components << " components)");
    CHECK(ok);
    if (!ok) return false;
    const cuda_kernels::JpegPixelTask& pt = plan.pixel_tasks[pixel_task];
    const int64_t pixel_end =
        pixel_task + 1 < plan.pixel_tasks.size() ? plan.pixel_tasks[pixel_task + 1].first_pixel : plan.total_pixels;
    const int64_t pixels = pixel_end - pt.first_pixel, pixel_rows = pt.rect_w > 0 ? pixels / pt.rect_w : 0;
    ok = pixels > 0 && pt.rect_w > 0 && pixels % pt.rect_w == 0 && pt.width == im.width && pt.height == im.height &&
         pt.rgb_offset == plan.rgb_offsets[i] && pt.num_components == L.num_components && pt.x0 >= 0 && pt.y0 >= 0 &&
         pt.x0 + pt.rect_w <= pt.width && pt.y0 + pixel_rows <= pt.height;
    INFO("pixel task " << pixel_task << ": rect " << pt.x0 << "," << pt.y0 << " +" << pt.rect_w << " x " << pixel_rows
                       << " rows");
    CHECK(ok);
    if (!ok) return false;
    for (int c = 0; c < L.num_components; ++c, ++block_task) {
      const data::JpegComponent& comp = L.components[c];
      const int64_t coef_begin = im.coef_offset + comp.coef_offset;
      const int64_t coef_end = coef_begin + int64_t{comp.blocks_w} * comp.blocks_h * 64;
      const int64_t stride = int64_t{8} * comp.blocks_w;
      const cuda_kernels::JpegBlockTask& bt = plan.block_tasks[block_task];
      const int64_t plane_end = bt.plane_offset + stride * 8 * comp.blocks_h;  // this component's plane
      const int64_t block_end =
          block_task + 1 < plan.block_tasks.size() ? plan.block_tasks[block_task + 1].first_block : plan.total_blocks;
      const int64_t blocks = block_end - bt.first_block, rows = bt.rect_w > 0 ? blocks / bt.rect_w : 0;
      const cuda_kernels::JpegPlaneView& v = pt.planes[c];
      INFO("component " << c << " (" << comp.blocks_w << "x" << comp.blocks_h << " blocks): block task " << block_task
                        << ", rect " << bt.bx0 << "," << bt.by0 << " +" << bt.rect_w << " x " << rows << " rows");
      ok = blocks > 0 && bt.rect_w > 0 && blocks % bt.rect_w == 0 && bt.blocks_w == comp.blocks_w &&
           bt.coef_offset == coef_begin && coef_begin >= 0 && coef_end <= coefficients && bt.plane_offset >= 0 &&
           plane_end <= plan.plane_bytes && bt.bx0 >= 0 && bt.by0 >= 0 && bt.bx0 + bt.rect_w <= comp.blocks_w &&
           bt.by0 + rows <= comp.blocks_h &&
           // The upsampler reads samples [0, width) x [0, height) of this plane, no further.
           v.plane_offset == bt.plane_offset && v.stride == stride && v.ratio_h >= 1 && v.ratio_v >= 1 &&
           v.width >= 1 && v.height >= 1 && v.width <= stride && v.height <= 8 * comp.blocks_h &&
           (pt.width - 1) / v.ratio_h < v.width && (pt.height - 1) / v.ratio_v < v.height;
      CHECK(ok);
      if (!ok) return false;
    }
    ++pixel_task;
  }
  const bool all_matched = block_task == plan.block_tasks.size() && pixel_task == plan.pixel_tasks.size();
  INFO(plan.block_tasks.size() << " block tasks and " << plan.pixel_tasks.size() << " pixel tasks, " << block_task
                               << " and " << pixel_task << " of them matched to images");
  CHECK(all_matched);
  if (!all_matched) return false;
  for (const data::GpuCropGroup& group : plan.groups) {
    const int64_t count = static_cast<int64_t>(group.crops.size());
    for (const cuda_kernels::CropTask& t : group.crops) {
      // The horizontal pass reads rows [row_lo, row_hi) of its image and writes them to the scratch.
      const bool ok = t.src_offset >= 0 && t.src_offset + int64_t{t.src_w} * t.src_h * 3 <= plan.rgb_bytes &&
                      t.row_lo >= 0 && t.row_lo <= t.row_hi && t.row_hi <= t.src_h &&
                      t.row_hi - t.row_lo <= group.max_rows && t.mid_offset >= 0 &&
                      t.mid_offset + int64_t{t.row_hi - t.row_lo} * group.S * 3 <= group.scratch_floats &&
                      t.out_index >= 0 && t.out_index < count;
      INFO("crop of S " << group.S << " from a " << t.src_w << "x" << t.src_h << " image, rows " << t.row_lo << " to "
                        << t.row_hi << ", output row " << t.out_index);
      CHECK(ok);
      if (!ok) return false;
    }
  }
  return true;
}

// One random change to a baseline JPEG, described in *what: sampling factors of a component
// (1..4 each, including ones no encoder writes), the frame size, both, bytes of the entropy-coded
// data, a truncation inside it, a quantisation value (0 and 255 included), or any header byte.
std::vector<uint8_t> mutate_jpeg(const std::vector<uint8_t>& jpeg, std::mt19937_64& rng, std::string* what) {
  std::vector<uint8_t> out = jpeg;
  const size_t sof = segment_offset(jpeg, 0xC0), dqt = segment_offset(jpeg, 0xDB);  // baseline frame
  const size_t scan = scan_data_offset(jpeg);
  REQUIRE((sof > 0 && dqt > 0 && scan + 2 < jpeg.size()));
  auto below = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto set_sampling = [&] {
    const size_t c = below(jpeg[sof + 9]), h = 1 + below(4), v = 1 + below(4);
    out[sof + 11 + 3 * c] = static_cast<uint8_t>(h << 4 | v);
    *what += fmt::format(" component {} sampled {}x{}", c, h, v);
  };
  auto set_size = [&] {
    const size_t height = (size_t{jpeg[sof + 5]} << 8) | jpeg[sof + 6],
                 width = (size_t{jpeg[sof + 7]} << 8) | jpeg[sof + 8];
    const size_t h = 1 + below(2 * height + 16), w = 1 + below(2 * width + 16);
    out[sof + 5] = static_cast<uint8_t>(h >> 8);
    out[sof + 6] = static_cast<uint8_t>(h);
    out[sof + 7] = static_cast<uint8_t>(w >> 8);
    out[sof + 8] = static_cast<uint8_t>(w);
    *what += fmt::format(" frame {}x{} (was {}x{})", w, h, width, height);
  };
  switch (below(7)) {
    case 0: set_sampling(); break;
    case 1: set_size(); break;
    case 2:
      set_sampling();
      set_size();
      break;
    case 3: {
      const size_t flips = 1 + below(6);
      for (size_t i = 0; i < flips; ++i) out[scan + below(jpeg.size() - 2 - scan)] = static_cast<uint8_t>(rng());
      *what += fmt::format(" {} entropy-coded bytes replaced", flips);
      break;
    }
    case 4: {
      const size_t keep = scan + below(jpeg.size() - scan);
      out.resize(keep);
      *what += fmt::format(" truncated to {} of {} bytes", keep, jpeg.size());
      break;
    }
    case 5: {
      const size_t k = below(64);
      const uint8_t value = static_cast<uint8_t>(below(3) == 0 ? (rng() & 1) * 255 : rng());
      out[dqt + 5 + k] = value;
      *what += fmt::format(" quantiser {} set to {}", k, value);
      break;
    }
    default: {
      const size_t at = 2 + below(scan - 2);
      out[at] = static_cast<uint8_t>(rng());
      *what += fmt::format(" header byte {} set to {}", at, out[at]);
    }
  }
  return out;
}

// A recipe a user could ask for: 1-3 global and 0-4 local crops of any side from 8 px, any scale
// range, jitter strengths up to 0.9 (hue 0.5), probabilities of 0, 0.5 or 1, any blur range.
data::AugmentRecipe random_recipe(std::mt19937_64& rng) {
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  data::AugmentRecipe r;
  r.global_crops = pick(1, 3);
  r.local_crops = pick(0, 4);
  r.global_size = pick(8, 256);
  r.local_size = pick(8, 128);
  r.global_scale_min = uniform(0.01, 1.0);
  r.global_scale_max = uniform(r.global_scale_min, 1.0);
  r.local_scale_min = uniform(0.01, 1.0);
  r.local_scale_max = uniform(r.local_scale_min, 1.0);
  r.brightness = uniform(0, 0.9);
  r.contrast = uniform(0, 0.9);
  r.saturation = uniform(0, 0.9);
  r.hue = uniform(0, 0.5);
  r.jitter_p = 0.5 * pick(0, 2);
  r.grayscale_p = 0.5 * pick(0, 2);
  r.blur_sigma_min = uniform(0.05, 3.0);
  r.blur_sigma_max = uniform(r.blur_sigma_min, 5.0);
  r.eval_resize_ratio = uniform(1.0, 1.5);
  return r;
}

std::string describe(const data::AugmentRecipe& r) {
  return fmt::format(
      "{}x{} + {}x{} px, scales [{:.3f}, {:.3f}] and [{:.3f}, {:.3f}], jitter {:.2f}/{:.2f}/{:.2f}/{:.2f} p {}, "
      "grayscale p {}, blur [{:.2f}, {:.2f}], eval ratio {:.3f}",
      r.global_crops, r.global_size, r.local_crops, r.local_size, r.global_scale_min, r.global_scale_max,
      r.local_scale_min, r.local_scale_max, r.brightness, r.contrast, r.saturation, r.hue, r.jitter_p, r.grayscale_p,
      r.blur_sigma_min, r.blur_sigma_max, r.eval_resize_ratio);
}

std::vector<MutatedBatch> mutated_batches(uint64_t seed, int trials) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::vector<ImageFile> bases, on_gpu, on_cpu;
  ImageFile png;
  for (const ImageFile& f : gpu_test_corpus_with_fixtures(seed)) {
    if (f.bytes.size() > 2 && f.bytes[0] == 0xFF && f.bytes[1] == 0xD8)
      bases.push_back(f);
    else
      png = f;
  }
  REQUIRE(!png.bytes.empty());
  int refused = 0;
  for (int t = 0; t < trials; ++t) {
    const ImageFile& base = bases[rng() % bases.size()];
    std::string what;
    ImageFile f{fmt::format("{} #{}:", base.name, t), {}};
    f.bytes = mutate_jpeg(base.bytes, rng, &what);
    f.name += what;
    INFO(f.name);
    std::vector<int16_t> coefficients;
    data::DecodedImage pixels;
    try {
      data::GpuBatchImage im = prepare_file_for_gpu(f.bytes, f.name, &coefficients, &pixels);
      (im.decode_on_gpu ? on_gpu : on_cpu).push_back(f);
    } catch (const data::ImageDecodeError&) {
      // The GPU loader skips the file; the CPU loader's decode_image must refuse it as well (both
      // refuse a file cut inside its image data).
      ++refused;
      data::ImageDecodeOptions loader_rule;
      loader_rule.refuse_truncated = true;
      CHECK_THROWS_AS(data::decode_image(f.bytes.data(), f.bytes.size(), f.name, loader_rule), data::ImageDecodeError);
    }
  }
  MESSAGE(trials << " mutated JPEGs: " << on_gpu.size() << " taken by the GPU path, " << on_cpu.size()
                 << " decoded on the CPU, " << refused << " refused by both");
  // (About 55 % are taken: 82 of 150 on average, sd 6. A fifth is 5.5 sd below that for 60 trials,
  // so a seed does not fail the count by chance, and the GPU path still sees a fair share.)
  CHECK(on_gpu.size() >= static_cast<size_t>(trials / 5));
  // Batch k holds GPU files 6k to 6k+5, the PNG, CPU-decoded file k if there is one, and a recipe
  // drawn from (seed, k). The mutations are drawn in order, so with fewer trials batch k has the
  // same files and recipe, except the last, partial batch and a CPU-decoded file k that only the
  // longer run reaches (none of 22,500 mutated files so far was decoded on the CPU).
  std::vector<MutatedBatch> batches;
  const size_t per_batch = 6;
  for (size_t first = 0, k = 0; first < on_gpu.size(); first += per_batch, ++k) {
    MutatedBatch batch;
    batch.files.assign(on_gpu.begin() + long(first), on_gpu.begin() + long(std::min(on_gpu.size(), first + per_batch)));
    batch.files.push_back(png);
    if (k < on_cpu.size()) batch.files.push_back(on_cpu[k]);
    std::mt19937_64 recipe_rng(seed + 0x51ed270b27ull * (k + 1));
    batch.recipe = random_recipe(recipe_rng);
    batch.eval_recipe = batch.recipe;
    batch.eval_recipe.global_size = std::min<int64_t>(batch.recipe.global_size, 64);
    batch.description = "recipe: " + describe(batch.recipe) + "\nfiles:";
    for (const ImageFile& f : batch.files) batch.description += "\n  " + f.name;
    batches.push_back(std::move(batch));
  }
  return batches;
}

CropDifferences crop_differences(const std::vector<float>& expected, const std::vector<float>& actual,
                                 const data::GpuCropGroup& group, const data::AugmentRecipe& recipe, double tolerance) {
  const int S = group.S;
  const size_t per_crop = size_t(3) * S * S;
  BAM_CHECK(expected.size() == actual.size() && expected.size() == group.crops.size() * per_crop,
            "crop_differences: {} vs {} values for {} crops of side {}", expected.size(), actual.size(),
            group.crops.size(), S);
  std::vector<const cuda_kernels::CropTask*> by_row(group.crops.size(), nullptr);
  for (const cuda_kernels::CropTask& t : group.crops) by_row.at(static_cast<size_t>(t.out_index)) = &t;
  const cuda_kernels::CropNormalize norm = data::crop_normalize(recipe);
  CropDifferences d;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i], a = actual[i];
    if (!std::isfinite(a)) {
      ++d.not_finite;
      continue;
    }
    if (std::fabs(e - a) <= tolerance) continue;
    // Back to grey levels (x = v * scale - shift). A crossing needs a blurred, solarised crop, and
    // values that solarising left just under 128 on one side and just under 127 on the other: the
    // two pre-solarisation values were both within a tenth of a level of 128, so they sum to 255.
    const cuda_kernels::CropTask* t = by_row[i / per_crop];
    const int c = static_cast<int>((i / (size_t(S) * S)) % 3);
    const double le = (e + norm.shift[c]) / norm.scale[c], la = (a + norm.shift[c]) / norm.scale[c];
    const bool crossing = t != nullptr && t->solarize && t->blur_sigma > 0 && std::max(le, la) < 128.0 &&
                          std::min(le, la) >= 126.9 && std::fabs(le + la - 255.0) < 0.1;
    ++(crossing ? d.solarize_crossings : d.beyond);
  }
  return d;
}

RepeatedCrops repeated_crops(const HostBatch& batch, size_t g, int distinct, int count) {
  const data::GpuCropGroup& group = batch.plan.groups.at(g);
  const int S = group.S;
  const size_t per_crop = size_t(3) * S * S;
  BAM_CHECK(distinct >= 1 && distinct <= static_cast<int>(group.crops.size()) && count >= distinct,
            "repeated_crops: {} distinct crops of {}, {} in all", distinct, group.crops.size(), count);
  std::vector<cuda_kernels::CropTask> by_rows = group.crops;
  std::stable_sort(by_rows.begin(), by_rows.end(), [](const auto& a, const auto& b) {
    return a.row_hi - a.row_lo < b.row_hi - b.row_lo;
  });
  const std::vector<float> all = reference_crops(batch)[g];
  RepeatedCrops r;
  r.recipe = batch.recipe;
  r.distinct.S = S;
  for (int i = 0; i < distinct; ++i) {
    cuda_kernels::CropTask t = by_rows[i];
    const auto first = all.begin() + t.out_index * static_cast<int64_t>(per_crop);
    r.expected.insert(r.expected.end(), first, first + static_cast<int64_t>(per_crop));
    t.out_index = i;
    r.distinct.crops.push_back(t);
    r.max_rows = std::max(r.max_rows, t.row_hi - t.row_lo);
  }
  r.distinct.max_rows = r.max_rows;
  int64_t mid = 0;
  for (int i = 0; i < count; ++i) {
    cuda_kernels::CropTask t = r.distinct.crops[i % distinct];
    t.out_index = i;
    t.mid_offset = mid;
    mid += int64_t{t.row_hi - t.row_lo} * S * 3;
    r.tasks.push_back(t);
  }
  r.scratch_floats = std::max<int64_t>(mid, int64_t(count) * int64_t(per_crop));
  r.rgb.assign(batch.plan.rgb_bytes, 0);
  for (size_t i = 0; i < batch.images.size(); ++i)
    std::copy(batch.reference[i].pixels.begin(), batch.reference[i].pixels.end(),
              r.rgb.begin() + batch.plan.rgb_offsets[i]);
  return r;
}

RepeatedCrops repeated_local_crops(uint64_t seed, int count) {
  data::AugmentRecipe recipe = multi_crop_test_recipe();
  recipe.local_size = 8;
  HostBatch b = prepare_host_batch(gpu_test_corpus_with_fixtures(seed), recipe, seed, false);
  BAM_CHECK(plan_in_bounds(b), "repeated_local_crops: the batch plan is out of bounds");
  return repeated_crops(b, b.plan.groups.size() - 1, 4, count);
}

RepeatedCropsCheck check_repeated_crops(const RepeatedCrops& r, const std::vector<float>& actual) {
  const int S = r.distinct.S;
  const size_t per_crop = size_t(3) * S * S, distinct = r.distinct.crops.size();
  BAM_CHECK(actual.size() == r.tasks.size() * per_crop, "check_repeated_crops: {} values for {} crops of side {}",
            actual.size(), r.tasks.size(), S);
  const std::vector<float> first(actual.begin(), actual.begin() + distinct * per_crop);
  RepeatedCropsCheck c;
  c.first = crop_differences(r.expected, first, r.distinct, r.recipe, 1e-3);
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!std::isfinite(actual[i])) ++c.not_finite;
    else if (actual[i] != first[(i / per_crop) % distinct * per_crop + i % per_crop]) ++c.unequal;
  }
  return c;
}

}  // namespace bam::test
