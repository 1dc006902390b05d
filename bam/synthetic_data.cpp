// Generated training data: smooth sinusoidal patterns per class, with per-crop noise and flips.
#include <cmath>
#include <vector>

#include "bam/train_config.h"
#include "bam/train_data.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace bam {
namespace {

class SyntheticData : public TrainData {
 public:
  SyntheticData(const TrainConfig& c, int64_t n) : config_(c), images_(n) {
    BAM_CHECK(n >= c.batch_size_per_gpu * c.world_size,
              "--data_path synthetic:{} has fewer images than one batch ({} x {} processes)", n, c.batch_size_per_gpu,
              c.world_size);
  }
  int64_t num_images() const override { return images_; }
  // Data parallelism: a step's global batch is the next world_size * B images of the permutation,
  // and this rank's part is the B at rank * B among them (data::BatchSequence does the same).
  int64_t steps_per_epoch() const override { return images_ / (config_.batch_size_per_gpu * config_.world_size); }
  void start_epoch(int64_t epoch, int64_t first_step) override {
    epoch_ = epoch;
    step_ = first_step;
  }
  std::string describe() const override {
    return fmt::format("synthetic data: {} generated images of {} patterns", images_, kPatterns);
  }

  CropBatch next() override {
    NoGradGuard no_grad;
    const int64_t B = config_.batch_size_per_gpu;
    CropBatch batch;
    batch.batch_size = B;
    // Which images: a per-epoch permutation keyed by (seed, epoch), drawn once per epoch.
    if (order_epoch_ != epoch_) {
      Generator order(static_cast<uint64_t>(config_.seed) * 7919 + static_cast<uint64_t>(epoch_) + 1);
      order_ = randperm(images_, &order).to_vector<int64_t>();
      order_epoch_ = epoch_;
    }
    const int64_t first = (step_ * config_.world_size + config_.rank) * B;
    std::vector<int64_t> ids(order_.begin() + first, order_.begin() + first + B);
    ++step_;
    int view = 0;
    for (bool global : {true, false}) {
      int64_t count = global ? config_.global_crops_number : config_.local_crops_number;
      int64_t size = global ? config_.global_crops_size : config_.local_crops_size;
      if (count == 0) continue;
      std::vector<Tensor> views;
      for (int64_t v = 0; v < count; ++v, ++view) views.push_back(render(ids, size, view));
      batch.groups.push_back(cat(views, 0));
    }
    return batch;
  }

 private:
  static constexpr int64_t kPatterns = 8;

  // [B, 3, S, S] crops of images `ids` for one view.
  Tensor render(const std::vector<int64_t>& ids, int64_t size, int view) const {
    const int64_t B = static_cast<int64_t>(ids.size());
    std::vector<float> pixels(B * 3 * size * size);
    for (int64_t b = 0; b < B; ++b) {
      int64_t pattern = ids[b] % kPatterns;
      Generator g(static_cast<uint64_t>(config_.seed) * 1000003 + static_cast<uint64_t>(ids[b]) * 131 +
                  static_cast<uint64_t>(view) * 17 + static_cast<uint64_t>(epoch_) * 7);
      std::vector<float> r = rand({4}, {}, &g).to_vector<float>();
      bool flip = r[0] < 0.5f;
      float brightness = 0.8f + 0.4f * r[1];
      float shift_x = r[2] * 0.2f, shift_y = r[3] * 0.2f;
      std::vector<float> noise = randn({3 * size * size}, {}, &g).to_vector<float>();
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < size; ++y)
          for (int64_t x = 0; x < size; ++x) {
            double u = (flip ? size - 1 - x : x) / double(size) + shift_x, v = y / double(size) + shift_y;
            double f1 = 1 + pattern % 4, f2 = 1 + pattern / 2;
            double value = std::sin(2 * M_PI * (f1 * u + 0.3 * c)) * std::cos(2 * M_PI * f2 * v + pattern);
            pixels[((b * 3 + c) * size + y) * size + x] =
                static_cast<float>(brightness * value + 0.3 * noise[(c * size + y) * size + x]);
          }
    }
    return from_vector(pixels, {B, 3, size, size});
  }

  TrainConfig config_;
  int64_t images_;
  int64_t epoch_ = 0, step_ = 0;
  int64_t order_epoch_ = -1;    // the epoch whose order order_ holds
  std::vector<int64_t> order_;  // this epoch's permutation of the images
};

}  // namespace

std::unique_ptr<TrainData> make_synthetic_data(const TrainConfig& config, int64_t num_images) {
  return std::make_unique<SyntheticData>(config, num_images);
}

}  // namespace bam
