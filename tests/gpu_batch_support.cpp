// The GPU data-path test helpers: corpus, host batch, CPU reference crops, comparison.
#include "tests/gpu_batch_support.h"

#include <stb_image_write.h>

#include <cmath>
#include <numeric>

#include "engine/error.h"
#include "tests/jpeg_test_support.h"

namespace bam::test {

namespace {

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

ImageFile encode(const std::string& name, int w, int h, int channels, int quality, uint64_t seed, bool png = false) {
  std::vector<uint8_t> px = synthetic_image(w, h, channels, seed);
  ImageFile f{name, {}};
  int ok = png ? stbi_write_png_to_func(append_bytes, &f.bytes, w, h, channels, px.data(), w * channels)
               : stbi_write_jpg_to_func(append_bytes, &f.bytes, w, h, channels, px.data(), quality);
  BAM_CHECK(ok && !f.bytes.empty(), "test corpus: cannot encode {}", name);
  return f;
}

}  // namespace

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

}  // namespace bam::test
