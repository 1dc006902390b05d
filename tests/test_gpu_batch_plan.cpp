// The host half of the GPU data path, and (when the CUDA backend is built) the GPU kernels' per-thread
// code run by their host emulators: the plan's rectangles cover every pixel a crop reads; the
// emulated IDCT + upsampling + colour conversion equal the CPU decode bit for bit inside them (with
// everything outside poisoned); the emulated crops equal render_crop / render_eval. The same checks,
// plus every task's bounds, run on randomly damaged JPEGs and on samplings no encoder writes.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "tests/doctest_text.h"
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

// The emulated decode of each batch (the recipe's crops, then eval_recipe's evaluation transform),
// its plan checked in bounds first, equals the CPU decode, bit for bit, inside every GPU-decoded
// image's rectangle (everything outside it is poisoned). Returns the images checked.
int check_emulated_decode(const std::vector<ImageFile>& files, uint64_t seed, const data::AugmentRecipe& recipe,
                          const data::AugmentRecipe& eval_recipe) {
  int checked_images = 0;
  for (bool eval : {false, true}) {
    HostBatch b = prepare_host_batch(files, eval ? eval_recipe : recipe, seed, eval);
    REQUIRE(plan_in_bounds(b));
    std::vector<uint8_t> rgb = emulated_decode(b);
    for (size_t i = 0; i < b.images.size(); ++i) {
      if (!b.images[i].decode_on_gpu) continue;
      size_t checked = 0;
      const size_t mismatches = decode_mismatches(b, i, rgb, &checked);
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
    REQUIRE(plan_in_bounds(b));
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

}  // namespace

TEST_CASE("emulated GPU decode kernels equal the CPU decode inside the crop rectangles") {
  const uint64_t seed = test_seed();
  std::vector<ImageFile> files = gpu_test_corpus_with_fixtures(seed);
  // The fixtures' samplings and colour space are the GPU path's to decode, not the fallback's.
  HostBatch b = prepare_host_batch(files, multi_crop_test_recipe(), seed, false);
  for (size_t i = 0; i < files.size(); ++i)
    if (files[i].name.rfind("cjpeg_", 0) == 0) CHECK_MESSAGE(b.images[i].decode_on_gpu, files[i].name);
  CHECK(check_emulated_decode(files, seed, multi_crop_test_recipe(), multi_crop_test_recipe()) ==
        2 * (static_cast<int>(files.size()) - 1));  // all but the PNG
}

TEST_CASE("emulated GPU crop kernels equal render_crop and render_eval") {
  const uint64_t seed = test_seed();
  check_emulated_crops(gpu_test_corpus_with_fixtures(seed), seed, multi_crop_test_recipe(), kAllCropVariants);
}

// The harness of the GPU suite's many-crop launch test, through the emulator at a small count:
// copies of a batch's crops, each with its own output row and scratch, render as the CPU does.
TEST_CASE("emulated crop kernels: repeated crops render as their first copies, and those as the CPU does") {
  const int count = 3 * 4 + 3;
  const RepeatedCrops r = repeated_local_crops(test_seed(), count);
  const int S = r.distinct.S;
  const size_t n = size_t(count) * 3 * S * S;
  std::vector<float> scratch(static_cast<size_t>(r.scratch_floats)), pixels(n), means(count), out(n, NAN);
  std::vector<double> row_sums(size_t(count) * S);
  cuda_kernels::crop_batch_render_emulated(r.tasks.data(), count, S, r.max_rows, r.rgb.data(),
                                           data::crop_normalize(r.recipe),
                                           {scratch.data(), pixels.data(), row_sums.data(), means.data()}, DType::f32,
                                           out.data());
  const RepeatedCropsCheck c = check_repeated_crops(r, out);
  CHECK(c.not_finite == 0);
  CHECK(c.unequal == 0);
  CHECK(c.first.not_finite == 0);
  CHECK(c.first.beyond == 0);
}

// The GPU suite's crop comparison tells unwritten outputs, solarisation crossings and other
// differences apart; only a blurred, solarised crop can have crossings.
TEST_CASE("crop_differences: not finite, solarisation crossings and the rest") {
  data::AugmentRecipe recipe = multi_crop_test_recipe();
  const cuda_kernels::CropNormalize norm = data::crop_normalize(recipe);
  data::GpuCropGroup group;
  group.S = 2;
  group.crops.resize(2, cuda_kernels::CropTask{});
  group.crops[0].out_index = 1;  // row 1: neither blurred nor solarised
  group.crops[1].out_index = 0;  // row 0: blurred and solarised
  group.crops[1].solarize = 1;
  group.crops[1].blur_sigma = 1.0f;
  const size_t per_crop = 3 * 2 * 2;
  auto normalised = [&](double level, size_t i) {
    const int c = static_cast<int>((i / 4) % 3);
    return static_cast<float>(level * norm.scale[c] - norm.shift[c]);
  };
  std::vector<float> expected(2 * per_crop), actual(2 * per_crop);
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = actual[i] = normalised(40.0 + i, i);
  actual[0] = NAN;                                                             // never written
  expected[5] = normalised(127.96, 5), actual[5] = normalised(127.04, 5);      // 127.96 kept, 127.96+ solarised
  actual[6] = normalised(46.0 + 2.0, 6);                                       // two levels off
  actual[9] = normalised(49.0 + 1e-4, 9);                                      // within the tolerance
  expected[10] = normalised(127.2, 10), actual[10] = normalised(128.2, 10);    // a level off, not a crossing
  expected[17] = normalised(127.96, 17), actual[17] = normalised(127.04, 17);  // the same, unsolarised crop
  const CropDifferences d = crop_differences(expected, actual, group, recipe, 1e-3);
  CHECK(d.not_finite == 1);
  CHECK(d.solarize_crossings == 1);
  CHECK(d.beyond == 3);
}

// The GPU path on damaged and unusual JPEGs. Each mutated file alone must be refused by both paths,
// handed to the CPU decode, or taken by the GPU path; the files it takes are then batched (with a
// CPU-decoded file mixed in) under a random recipe, and each batch's plan must stay in bounds and
// its emulated kernels must equal the CPU path: the decode inside the rectangles, and the crops. A file the
// decoder accepts in a form the kernels index differently (a sampling no encoder writes, a frame
// that is not a whole number of MCUs, a component wider than the luma) shows up here.
TEST_CASE("GPU path on damaged and unusual JPEGs: plans stay in bounds, emulated kernels equal the CPU path") {
  const uint64_t seed = test_seed();
  for (const MutatedBatch& batch : mutated_batches(seed, 150)) {
    INFO(batch.description);
    CHECK(check_emulated_decode(batch.files, seed, batch.recipe, batch.eval_recipe) > 0);
    check_emulated_crops(batch.files, seed, batch.recipe, {kMultiCropF32, kEval}, true);
  }
}

#endif  // BAM_WITH_CUDA

}  // namespace bam::test
