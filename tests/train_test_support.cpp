// small_train_config, tiny_vit_config and write_colour_folder (train_test_support.h).
#include "tests/train_test_support.h"

#include <stb_image_write.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "engine/random.h"
#include "engine/tensor.h"
#include "tests/support.h"

namespace bam::test {

TrainResult train(const TrainConfig& c) {
  Trainer trainer(c, make_train_data(c));
  return trainer.run();
}

CropBatch ChangingSpeedData::next() {
  std::this_thread::sleep_for(std::chrono::milliseconds(batches_++ < switch_at_ ? first_ms_ : then_ms_));
  return PassThroughData::next();
}

TrainConfig small_train_config(const std::string& output_dir) {
  TrainConfig c;
  c.arch = "custom";
  c.embed_dim = 32;
  c.depth = 2;
  c.num_heads = 2;
  c.patch_size = 4;
  c.global_crops_size = 16;
  c.local_crops_number = 2;
  c.local_crops_size = 8;
  c.hidden_dim = 64;
  c.out_dim = 64;
  c.batch_size_per_gpu = 16;
  c.epochs = 3;
  c.warmup_epochs = 1;
  c.lr = 0.002;
  c.data_path = "synthetic:64";
  c.output_dir = output_dir;
  c.log_freq = 1000;
  c.saveckp_freq = 0;
  c.drop_path_rate = 0.1;  // exercises the per-step RNG in the resume test
  return c;
}

VitConfig tiny_vit_config(int64_t patch_size, int64_t img_size, int64_t embed_dim, int64_t heads) {
  VitConfig v;
  v.embed_dim = embed_dim;
  v.depth = 2;
  v.num_heads = heads;
  v.patch_size = patch_size;
  v.img_size = img_size;
  return v;
}

std::string write_colour_folder(const std::string& name, int classes, int per_class, uint64_t seed) {
  namespace fs = std::filesystem;
  const fs::path root = scratch_dir(name);
  Generator gen(seed);
  const uint8_t palette[4][3] = {{220, 40, 40}, {40, 200, 60}, {50, 60, 210}, {200, 200, 40}};
  for (int c = 0; c < classes; ++c) {
    const fs::path dir = root / ("class_" + std::to_string(c));
    fs::create_directories(dir);
    for (int i = 0; i < per_class; ++i) {
      const int w = 12 + (i * 3) % 9, h = 12 + (i * 5) % 9;
      std::vector<float> noise = randn({w * h * 3}, {}, &gen).to_vector<float>();
      std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
      for (int k = 0; k < w * h * 3; ++k)
        px[k] = static_cast<uint8_t>(std::clamp(palette[c % 4][k % 3] + 25.0f * noise[k], 0.0f, 255.0f));
      const std::string path = (dir / (std::to_string(i) + ".jpg")).string();
      if (!stbi_write_jpg(path.c_str(), w, h, 3, px.data(), 92)) throw std::runtime_error("cannot write " + path);
    }
  }
  return root.string();
}

ObjectLocatorOptions small_locator_options(int64_t image_size, double threshold) {
  ObjectLocatorOptions o;
  o.image_size = image_size;
  o.threshold = threshold;
  o.batch_size = 4;
  o.threads = 2;
  return o;
}

}  // namespace bam::test
