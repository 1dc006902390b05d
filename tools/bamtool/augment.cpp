// `bamtool augment`: a PNG grid of the multi-crop views of a few images (one row per image: the
// global views, then the local views), so a user can see what their augmentation does.

#include "data/augment.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "data/dataset.h"
#include "data/image_error.h"
#include "engine/error.h"
#include "tools/bamtool/commands.h"
#include "tools/common/image_files.h"

namespace bam::tool {
namespace {

struct AugmentOptions {
  std::string data_path, out = "augment.png";
  int64_t n = 4, seed = 0, epoch = 0;
  data::AugmentRecipe recipe;
  std::vector<double> global_scale, local_scale;
};

int run_augment(AugmentOptions o) {
  // As bamtrain takes them: 0 < min <= max <= 1 (a crop of more than the image, or none, has no box).
  for (const auto& [flag, scale] :
       {std::pair{"--global_crops_scale", &o.global_scale}, std::pair{"--local_crops_scale", &o.local_scale}})
    BAM_CHECK(scale->empty() || ((*scale)[0] > 0 && (*scale)[0] <= (*scale)[1] && (*scale)[1] <= 1),
              "{} must be 0 < min <= max <= 1, got {} {}", flag, scale->empty() ? 0 : (*scale)[0],
              scale->empty() ? 0 : (*scale)[1]);
  if (o.global_scale.size() == 2) o.recipe.global_scale_min = o.global_scale[0], o.recipe.global_scale_max = o.global_scale[1];
  if (o.local_scale.size() == 2) o.recipe.local_scale_min = o.local_scale[0], o.recipe.local_scale_max = o.local_scale[1];
  data::Dataset dataset;
  try {
    dataset = data::open_dataset(o.data_path);
  } catch (const data::ImageDecodeError& e) {
    fail("--data_path {}", e.what());
  }
  // The first --n images of the epoch's order that decode, one at a time: a damaged one is
  // reported and skipped. The grid is cut to the rows drawn.
  const std::vector<int64_t> order = data::epoch_order(dataset.size(), static_cast<uint64_t>(o.seed), o.epoch);
  const int64_t capacity = std::min<int64_t>(o.n, dataset.size()), views = o.recipe.views();
  const int cell = static_cast<int>(std::max(o.recipe.global_size, o.recipe.local_size)), pad = 4;
  const int width = static_cast<int>(views * (cell + pad) + pad);
  std::vector<uint8_t> grid(static_cast<size_t>(width) * static_cast<size_t>(capacity * (cell + pad) + pad) * 3, 255);
  int64_t rows = 0, skipped = 0;
  for (size_t k = 0; k < order.size() && rows < capacity; ++k) {
    const int64_t index = order[k];
    data::DecodedImage image;
    try {
      image = data::decode_image_file(dataset.files[index]);
    } catch (const data::ImageDecodeError& e) {
      std::fprintf(stderr, "skipped %s\n", e.what());
      ++skipped;
      continue;
    }
    const int64_t r = rows++;
    for (int64_t v = 0; v < views; ++v) {
      data::CropParams p =
          data::sample_crop(o.recipe, image.width, image.height, static_cast<uint64_t>(o.seed),
                            static_cast<uint32_t>(o.epoch), static_cast<uint32_t>(index), static_cast<uint32_t>(v));
      std::vector<float> crop(3 * p.out_size * p.out_size);
      data::render_crop(image, p, o.recipe, crop.data());
      const int x0 = static_cast<int>(pad + v * (cell + pad)), y0 = static_cast<int>(pad + r * (cell + pad));
      for (int y = 0; y < p.out_size; ++y)
        for (int x = 0; x < p.out_size; ++x)
          for (int c = 0; c < 3; ++c) {
            // Undo the normalisation to show the pixels the network sees.
            float value = (crop[(c * p.out_size + y) * p.out_size + x] * o.recipe.std[c] + o.recipe.mean[c]) * 255.0f;
            grid[(static_cast<size_t>(y0 + y) * width + x0 + x) * 3 + c] =
                static_cast<uint8_t>(std::clamp(value + 0.5f, 0.0f, 255.0f));
          }
    }
  }
  BAM_CHECK(rows > 0, "--data_path {}: none of its {} images could be decoded", o.data_path, skipped);
  const int height = static_cast<int>(rows * (cell + pad) + pad);
  grid.resize(static_cast<size_t>(width) * height * 3);
  write_png_file(o.out, width, height, grid.data());
  if (skipped > 0)
    std::printf("%lld image%s could not be decoded and %s skipped (named above)\n", static_cast<long long>(skipped),
                skipped == 1 ? "" : "s", skipped == 1 ? "was" : "were");
  std::printf("wrote %s: %lld images x %lld views (%lld global %lldpx, %lld local %lldpx)\n", o.out.c_str(),
              static_cast<long long>(rows), static_cast<long long>(views), static_cast<long long>(o.recipe.global_crops),
              static_cast<long long>(o.recipe.global_size), static_cast<long long>(o.recipe.local_crops),
              static_cast<long long>(o.recipe.local_size));
  return 0;
}

}  // namespace

Action add_augment(CLI::App& app) {
  auto o = std::make_shared<AugmentOptions>();
  CLI::App* sub = app.add_subcommand("augment", "Write a PNG grid of multi-crop views of some images");
  sub->add_option("--data_path", o->data_path, "folder or file list of images")->required();
  sub->add_option("--out", o->out, "output PNG")->default_val(o->out);
  sub->add_option("--n", o->n, "number of images (rows)")->default_val(o->n)->check(positive_number);
  sub->add_option("--seed", o->seed, "augmentation seed")->default_val(o->seed);
  sub->add_option("--epoch", o->epoch, "epoch (part of the RNG key)")->default_val(o->epoch);
  sub->add_option("--global_crops_number", o->recipe.global_crops, "global views")
      ->default_val(o->recipe.global_crops)
      ->check(positive_number);
  sub->add_option("--local_crops_number", o->recipe.local_crops, "local views (bamtrain's default: 0)")
      ->default_val(o->recipe.local_crops)
      ->check(non_negative_number);
  sub->add_option("--global_crops_size", o->recipe.global_size, "global side")
      ->default_val(o->recipe.global_size)
      ->check(positive_number);
  sub->add_option("--local_crops_size", o->recipe.local_size, "local side")
      ->default_val(o->recipe.local_size)
      ->check(positive_number);
  sub->add_option("--global_crops_scale", o->global_scale, "global area range")->expected(2);
  sub->add_option("--local_crops_scale", o->local_scale, "local area range")->expected(2);
  return [o] { return run_augment(*o); };
}

}  // namespace bam::tool
