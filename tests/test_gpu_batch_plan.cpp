// The host half of the GPU data path, and (when the CUDA backend is built) the GPU kernels' per-thread
// code run by their host emulators: the plan's rectangles cover every pixel a crop reads; the
// emulated IDCT + upsampling + colour conversion equal the CPU decode bit for bit inside them (with
// everything outside poisoned); the emulated crops equal render_crop / render_eval. The same checks,
// plus every task's bounds, run on randomly damaged JPEGs and on samplings no encoder writes.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>

#include "tests/gpu_batch_support.h"
#include "tests/jpeg_test_support.h"
#ifdef BAM_WITH_CUDA
#include "kernels/cuda/crop_batch.h"
#include "kernels/cuda/jpeg_batch.h"
#endif

namespace bam::test {
namespace {

#ifdef BAM_WITH_CUDA
// The emulated decode kernels over a batch, into poisoned planes and RGB (0xA5, 0x5A).
std::vector<uint8_t> emulated_decode(const HostBatch& b) {
  std::vector<uint8_t> planes(b.plan.plane_bytes, 0xA5), rgb(b.plan.rgb_bytes, 0x5A);
  cuda_kernels::jpeg_idct_batch_emulated(b.plan.block_tasks.data(), static_cast<int>(b.plan.block_tasks.size()),
                                         b.plan.total_blocks, b.coefficients.data(), planes.data());
  cuda_kernels::jpeg_upsample_convert_batch_emulated(b.plan.pixel_tasks.data(),
                                                     static_cast<int>(b.plan.pixel_tasks.size()), b.plan.total_pixels,
                                                     planes.data(), rgb.data());
  return rgb;
}
#endif

}  // namespace

TEST_CASE("GPU batch plan: rectangles cover the crops, blocks outside them are skipped") {
  const uint64_t seed = test_seed();
  std::vector<ImageFile> files = gpu_test_corpus(seed);
  data::AugmentRecipe recipe = multi_crop_test_recipe();
  HostBatch b = prepare_host_batch(files, recipe, seed, false);
  REQUIRE(b.plan.groups.size() == 2);
  CHECK(b.plan.groups[0].crops.size() == 2 * files.size());
  CHECK(b.plan.groups[1].crops.size() == 6 * files.size());
  int on_gpu = 0;
  for (size_t i = 0; i < b.images.size(); ++i) {
    on_gpu += b.images[i].decode_on_gpu;
    const data::PixelRect& r = b.plan.rects[i];
    CHECK(r.x0 >= 0);
    CHECK(r.y0 >= 0);
    CHECK(r.x1 <= b.images[i].width);
    CHECK(r.y1 <= b.images[i].height);
  }
  CHECK(on_gpu == static_cast<int>(files.size()) - 1);  // the PNG goes as pixels
  for (size_t g = 0; g < b.crops.size(); ++g)
    for (const data::GpuBatchCrop& c : b.crops[g]) {
      data::PixelRect r = data::crop_source_rect(c.task, b.sizes[g]);
      const data::PixelRect& u = b.plan.rects[c.image];
      CHECK((r.x0 >= u.x0 && r.x1 <= u.x1 && r.y0 >= u.y0 && r.y1 <= u.y1));
    }
  // A small crop leaves most of a 500x375 image's blocks out. One crop: an image's decode
  // rectangle bounds all of its crops, so two small crops in opposite corners can span most of it.
  data::AugmentRecipe small = recipe;
  small.global_crops = 0;
  small.local_crops = 1;
  small.local_scale_min = 0.05;
  small.local_scale_max = 0.1;
  HostBatch s = prepare_host_batch({files[0]}, small, seed, false);
  int64_t all_blocks = 0;
  for (int c = 0; c < s.images[0].layout.num_components; ++c)
    all_blocks += int64_t{s.images[0].layout.components[c].blocks_w} * s.images[0].layout.components[c].blocks_h;
  MESSAGE("blocks decoded for one small crop: " << s.plan.total_blocks << " of " << all_blocks);
  CHECK(s.plan.total_blocks > 0);
  CHECK(s.plan.total_blocks < all_blocks / 2);
}

// The GPU kernels do not rotate: a JPEG with an Exif orientation goes to the CPU decoder, wherever
// its Exif segment is. The quick marker scan stops at the first scan, so a segment after it (legal
// before EOI, and in multi-scan files between scans) must still send the file to the CPU, or the
// GPU crops would be cut from the unrotated image while the CPU loader's are upright.
TEST_CASE("GPU batch plan: a JPEG whose Exif orientation follows the scan is decoded and rotated on the CPU") {
  const std::vector<uint8_t> jpeg = cjpeg_fixtures().front().bytes;  // 181x127, 4:2:2
  REQUIRE(jpeg.size() > 4);
  REQUIRE((jpeg[jpeg.size() - 2] == 0xFF && jpeg[jpeg.size() - 1] == 0xD9));
  for (bool before_scan : {true, false}) {
    CAPTURE(before_scan);
    std::vector<uint8_t> tagged;
    if (before_scan) {
      tagged = with_exif(jpeg, 6, false);
    } else {  // right before EOI
      const std::vector<uint8_t> segment = exif_segment(6, false);
      tagged.assign(jpeg.begin(), jpeg.end() - 2);
      tagged.insert(tagged.end(), segment.begin(), segment.end());
      tagged.insert(tagged.end(), jpeg.end() - 2, jpeg.end());
    }
    const data::DecodedImage upright = data::decode_image(tagged.data(), tagged.size(), "tagged.jpg");
    REQUIRE(upright.exif_orientation == 6);
    REQUIRE((upright.width == 127 && upright.height == 181));
    std::vector<int16_t> coefficients;
    data::DecodedImage pixels;
    std::vector<std::string> warnings;
    data::GpuBatchImage im = prepare_file_for_gpu(tagged, "tagged.jpg", &coefficients, &pixels, &warnings);
    CHECK_FALSE(im.decode_on_gpu);
    CHECK(im.width == 127);
    CHECK(im.height == 181);
    CHECK(pixels.pixels == upright.pixels);
    CHECK(warnings.empty());
  }
}

#ifdef BAM_WITH_CUDA

namespace {

// The emulated decode of each batch (the recipe's crops, then its evaluation transform) equals the
// CPU decode, bit for bit, inside every GPU-decoded image's rectangle (everything outside it is
// poisoned). Returns the images checked.
int check_emulated_decode(const std::vector<ImageFile>& files, uint64_t seed, const data::AugmentRecipe& recipe) {
  int checked_images = 0;
  for (bool eval : {false, true}) {
    HostBatch b = prepare_host_batch(files, recipe, seed, eval);
    std::vector<uint8_t> rgb = emulated_decode(b);
    for (size_t i = 0; i < b.images.size(); ++i) {
      if (!b.images[i].decode_on_gpu) continue;
      const data::PixelRect& r = b.plan.rects[i];
      const data::DecodedImage& ref = b.reference[i];
      size_t mismatches = 0, checked = 0;
      for (int y = r.y0; y < r.y1; ++y)
        for (int x = r.x0; x < r.x1; ++x)
          for (int c = 0; c < 3; ++c) {
            size_t at = (size_t(y) * ref.width + x) * 3 + c;
            mismatches += rgb[b.plan.rgb_offsets[i] + at] != ref.pixels[at];
            ++checked;
          }
      INFO(files[i].name << (eval ? " (eval)" : ""));
      CHECK(checked > 0);
      CHECK(mismatches == 0);
      ++checked_images;
    }
  }
  return checked_images;
}

struct CropVariant {
  const char* name;
  bool eval, crop_and_flip_only;
  DType out;
};
const CropVariant kMultiCropF32{"multi-crop f32", false, false, DType::f32}, kEval{"eval", true, false, DType::f32};
const std::vector<CropVariant> kAllCropVariants{kMultiCropF32,
                                                {"multi-crop bf16", false, false, DType::bf16},
                                                {"crop and flip only", false, true, DType::f32},
                                                kEval};

// The emulated crop kernels on the emulated decode equal render_crop / render_eval on the CPU
// decode, in each variant (multi-crop in f32 and bf16, crop and flip only, the evaluation transform
// at a side of at most 64).
void check_emulated_crops(const std::vector<ImageFile>& files, uint64_t seed, const data::AugmentRecipe& base,
                          const std::vector<CropVariant>& variants, bool quiet = false) {
  for (const CropVariant& v : variants) {
    data::AugmentRecipe recipe = base;
    recipe.crop_and_flip_only = v.crop_and_flip_only;
    if (v.eval) recipe.global_size = std::min<int64_t>(recipe.global_size, 64);
    HostBatch b = prepare_host_batch(files, recipe, seed, v.eval);
    std::vector<uint8_t> rgb = emulated_decode(b);
    place_fallback_pixels(b, rgb.data());
    std::vector<std::vector<float>> expected = reference_crops(b);
    const cuda_kernels::CropNormalize norm = data::crop_normalize(recipe);
    for (size_t g = 0; g < b.plan.groups.size(); ++g) {
      const data::GpuCropGroup& group = b.plan.groups[g];
      const int S = group.S, count = static_cast<int>(group.crops.size());
      std::vector<float> scratch(group.scratch_floats, NAN), pixels(group.pixel_floats, NAN), means(count, NAN);
      std::vector<double> row_sums(size_t(count) * S, NAN);
      const size_t n = size_t(count) * 3 * S * S;
      std::vector<float> actual(n, NAN);
      std::vector<uint16_t> actual_bf16(n, 0xFFFF);
      cuda_kernels::crop_batch_render_emulated(
          group.crops.data(), count, S, group.max_rows, rgb.data(), norm,
          {scratch.data(), pixels.data(), row_sums.data(), means.data()}, v.out,
          v.out == DType::bf16 ? static_cast<void*>(actual_bf16.data()) : static_cast<void*>(actual.data()));
      std::vector<float> want = expected[g];
      if (v.out == DType::bf16) {
        // Compare with the CPU values rounded to bf16 the same way (round to nearest even).
        for (size_t i = 0; i < n; ++i) {
          uint32_t bits = uint32_t{actual_bf16[i]} << 16;
          std::memcpy(&actual[i], &bits, 4);
          uint32_t w;
          std::memcpy(&w, &want[i], 4);
          w = (w + 0x7fffu + ((w >> 16) & 1u)) & 0xffff0000u;
          std::memcpy(&want[i], &w, 4);
        }
      }
      CropComparison c = compare_crops(want, actual);
      INFO(std::string(v.name) << ", group " << g << " (S=" << S << ", " << count << " crops)");
      if (!quiet)
        MESSAGE(std::string(v.name) << " S=" << S << ": max |GPU emulated - CPU| = " << c.max_abs << ", " << c.beyond
                                    << " of " << c.values << " beyond 1e-3");
      CHECK(c.beyond == 0);
      CHECK(c.max_abs <= (v.out == DType::bf16 ? 0.0 : 1e-5));
    }
  }
}

// Every task of the plan stays inside the buffers the loader sizes from it (the images'
// coefficients, plan.plane_bytes, plan.rgb_bytes) and inside its component's block grid: what an
// index bug in the plan would make a kernel overrun on the GPU. Returns false (after reporting) on
// the first task outside, so that the emulators are not run on a plan that would overrun.
bool plan_in_bounds(const HostBatch& b) {
  const data::GpuBatchPlan& plan = b.plan;
  const int64_t coefficients = static_cast<int64_t>(b.coefficients.size());
  for (size_t t = 0; t < plan.block_tasks.size(); ++t) {
    const cuda_kernels::JpegBlockTask& bt = plan.block_tasks[t];
    const int64_t end = t + 1 < plan.block_tasks.size() ? plan.block_tasks[t + 1].first_block : plan.total_blocks;
    const int64_t blocks = end - bt.first_block, rows = bt.rect_w > 0 ? blocks / bt.rect_w : 0;
    const int64_t last = (bt.by0 + rows - 1) * bt.blocks_w + bt.bx0 + bt.rect_w - 1;  // in the component's grid
    const int64_t stride = int64_t{8} * bt.blocks_w;
    INFO("block task " << t << ": first block " << bt.first_block << ", " << blocks << " blocks, rect " << bt.bx0 << ","
                       << bt.by0 << " +" << bt.rect_w << " of a grid " << bt.blocks_w << " wide");
    const bool ok = blocks > 0 && bt.rect_w > 0 && blocks % bt.rect_w == 0 && bt.bx0 >= 0 && bt.by0 >= 0 &&
                    bt.bx0 + bt.rect_w <= bt.blocks_w && bt.coef_offset >= 0 &&
                    bt.coef_offset + (last + 1) * 64 <= coefficients && bt.plane_offset >= 0 &&
                    bt.plane_offset + ((bt.by0 + rows) * 8 - 1) * stride + (bt.bx0 + bt.rect_w) * 8 <= plan.plane_bytes;
    CHECK(ok);
    if (!ok) return false;
  }
  for (size_t t = 0; t < plan.pixel_tasks.size(); ++t) {
    const cuda_kernels::JpegPixelTask& pt = plan.pixel_tasks[t];
    const int64_t end = t + 1 < plan.pixel_tasks.size() ? plan.pixel_tasks[t + 1].first_pixel : plan.total_pixels;
    const int64_t pixels = end - pt.first_pixel, rows = pt.rect_w > 0 ? pixels / pt.rect_w : 0;
    bool ok = pixels > 0 && pt.rect_w > 0 && pixels % pt.rect_w == 0 && pt.x0 >= 0 && pt.y0 >= 0 &&
              pt.x0 + pt.rect_w <= pt.width && pt.y0 + rows <= pt.height && pt.rgb_offset >= 0 &&
              pt.rgb_offset + int64_t{pt.width} * pt.height * 3 <= plan.rgb_bytes;
    for (int c = 0; c < pt.num_components; ++c) {
      const cuda_kernels::JpegPlaneView& v = pt.planes[c];
      // The upsampler reads samples [0, width) x [0, height) of the plane, no further.
      ok = ok && v.ratio_h >= 1 && v.ratio_v >= 1 && v.width >= 1 && v.height >= 1 && v.width <= v.stride &&
           v.plane_offset >= 0 && v.plane_offset + int64_t{v.height - 1} * v.stride + v.width <= plan.plane_bytes &&
           (pt.width - 1) / v.ratio_h < v.width && (pt.height - 1) / v.ratio_v < v.height;
    }
    INFO("pixel task " << t << ": " << pt.width << "x" << pt.height << ", rect " << pt.x0 << "," << pt.y0 << " +"
                       << pt.rect_w << " x " << rows << " rows, " << pt.num_components << " components");
    CHECK(ok);
    if (!ok) return false;
  }
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

// The first SOF0/SOF1 or DQT segment before the scan (its 0xFF byte), or 0 when there is none.
size_t find_segment(const std::vector<uint8_t>& jpeg, std::initializer_list<int> markers) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xFF && jpeg[pos + 1] != 0xDA) {
    for (int m : markers)
      if (jpeg[pos + 1] == m) return pos;
    pos += 2 + ((size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3]);
  }
  return 0;
}

// One random change to a baseline JPEG, described in *what: sampling factors of a component
// (1..4 each, including ones no encoder writes), the frame size, both, bytes of the entropy-coded
// data, a truncation inside it, a quantisation value (0 and 255 included), or any header byte.
std::vector<uint8_t> mutate_jpeg(const std::vector<uint8_t>& jpeg, std::mt19937_64& rng, std::string* what) {
  std::vector<uint8_t> out = jpeg;
  const size_t sof = find_segment(jpeg, {0xC0, 0xC1}), dqt = find_segment(jpeg, {0xDB});
  const size_t scan = scan_data_offset(jpeg);
  REQUIRE((sof > 0 && dqt > 0 && scan < jpeg.size()));
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

}  // namespace

TEST_CASE("emulated GPU decode kernels equal the CPU decode inside the crop rectangles") {
  const uint64_t seed = test_seed();
  std::vector<ImageFile> files = gpu_test_corpus_with_fixtures(seed);
  // The fixtures' samplings and colour space are the GPU path's to decode, not the fallback's.
  HostBatch b = prepare_host_batch(files, multi_crop_test_recipe(), seed, false);
  for (size_t i = 0; i < files.size(); ++i)
    if (files[i].name.rfind("cjpeg_", 0) == 0) CHECK_MESSAGE(b.images[i].decode_on_gpu, files[i].name);
  CHECK(check_emulated_decode(files, seed, multi_crop_test_recipe()) ==
        2 * (static_cast<int>(files.size()) - 1));  // all but the PNG
}

TEST_CASE("emulated GPU crop kernels equal render_crop and render_eval") {
  const uint64_t seed = test_seed();
  check_emulated_crops(gpu_test_corpus_with_fixtures(seed), seed, multi_crop_test_recipe(), kAllCropVariants);
}

// The GPU path on damaged and unusual JPEGs. Each mutated file alone must be refused by both paths,
// handed to the CPU decode, or taken by the GPU path; the files it takes are then batched (with a
// CPU-decoded file mixed in) under a random recipe, and each batch's plan must stay in bounds and
// its emulated kernels must equal the CPU path: the decode inside the rectangles, and the crops. A file the
// decoder accepts in a form the kernels index differently (a sampling no encoder writes, a frame
// that is not a whole number of MCUs, a component wider than the luma) shows up here.
TEST_CASE("GPU path on damaged and unusual JPEGs: plans stay in bounds, emulated kernels equal the CPU path") {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::vector<ImageFile> bases, on_gpu, on_cpu;
  for (const ImageFile& f : gpu_test_corpus_with_fixtures(seed))
    (f.bytes.size() > 2 && f.bytes[0] == 0xFF && f.bytes[1] == 0xD8 ? bases : on_cpu).push_back(f);  // the PNG
  REQUIRE(on_cpu.size() == 1);
  int refused = 0;
  const int trials = 150;
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
      ++refused;  // and the CPU loader skips it too
      CHECK_THROWS_AS(data::decode_image(f.bytes.data(), f.bytes.size(), f.name), data::ImageDecodeError);
    }
  }
  MESSAGE(trials << " mutated JPEGs: " << on_gpu.size() << " taken by the GPU path, " << on_cpu.size() - 1
                 << " decoded on the CPU, " << refused << " refused by both");
  CHECK(on_gpu.size() >= static_cast<size_t>(trials / 3));
  const size_t per_batch = 6;
  for (size_t first = 0; first < on_gpu.size(); first += per_batch) {
    std::vector<ImageFile> batch(on_gpu.begin() + long(first),
                                 on_gpu.begin() + long(std::min(on_gpu.size(), first + per_batch)));
    batch.push_back(on_cpu[(first / per_batch) % on_cpu.size()]);  // a CPU-decoded image in every batch
    std::string names;
    for (const ImageFile& f : batch) names += "\n  " + f.name;
    INFO("batch:" << names);
    const data::AugmentRecipe recipe = random_recipe(rng);
    INFO("recipe: " << describe(recipe));
    bool in_bounds = true;
    for (bool eval : {false, true})
      in_bounds = in_bounds && plan_in_bounds(prepare_host_batch(batch, recipe, seed, eval));
    REQUIRE(in_bounds);
    CHECK(check_emulated_decode(batch, seed, recipe) > 0);
    check_emulated_crops(batch, seed, recipe, {kMultiCropF32, kEval}, true);
  }
}

#endif  // BAM_WITH_CUDA

}  // namespace bam::test
