// The small training configuration the CPU and GPU training tests start from: a 2-block, 32-wide
// ViT on 16 px global and 8 px local crops of synthetic images, a few epochs, no checkpoints
// between epochs (tests change what they exercise); and a small labelled folder of image files.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "bam/contrastive_crop.h"
#include "bam/train_config.h"
#include "bam/train_data.h"
#include "bam/trainer.h"

namespace bam::test {

TrainConfig small_train_config(const std::string& output_dir);

// A Trainer of `c` on the data it names (make_train_data), run: what the run returns.
TrainResult train(const TrainConfig& c);

// A data source that passes every call through to `inner`: the base of the tests' wrappers, which
// override the calls they watch or change.
class PassThroughData : public TrainData {
 public:
  explicit PassThroughData(std::unique_ptr<TrainData> inner) : inner_(std::move(inner)) {}
  int64_t num_images() const override { return inner_->num_images(); }
  int64_t steps_per_epoch() const override { return inner_->steps_per_epoch(); }
  void start_epoch(int64_t epoch, int64_t first_step) override { inner_->start_epoch(epoch, first_step); }
  CropBatch next() override { return inner_->next(); }
  void set_epochs(int64_t epochs) override { inner_->set_epochs(epochs); }
  std::string describe() const override { return inner_->describe(); }
  const data::Dataset* images() const override { return inner_->images(); }
  void set_object_boxes(std::shared_ptr<const data::ObjectBoxes> boxes) override {
    inner_->set_object_boxes(std::move(boxes));
  }

 private:
  std::unique_ptr<TrainData> inner_;
};

// Passes a source's batches through, each after a pause: `first_ms` for the first `switch_at`
// batches (counted over the run; the step calibration's among them), `then_ms` after. A machine
// whose speed changes mid-run, for the time-budget fit.
class ChangingSpeedData : public PassThroughData {
 public:
  ChangingSpeedData(std::unique_ptr<TrainData> inner, int first_ms, int then_ms, int64_t switch_at)
      : PassThroughData(std::move(inner)), first_ms_(first_ms), then_ms_(then_ms), switch_at_(switch_at) {}
  CropBatch next() override;

 private:
  int first_ms_, then_ms_;
  int64_t switch_at_, batches_ = 0;
};

// A ViT small enough for any test: 2 blocks of `embed_dim` with `heads` heads, on img_size-pixel
// images in patch_size-pixel patches.
VitConfig tiny_vit_config(int64_t patch_size, int64_t img_size, int64_t embed_dim = 32, int64_t heads = 2);

// A folder of `classes` x `per_class` JPEGs in the process's scratch folder (scratch_dir(name),
// emptied first), ImageFolder layout: class c's images are noisy versions of one colour (red,
// green, blue, yellow), 12 to 20 px on a side. Returns its path.
std::string write_colour_folder(const std::string& name, int classes, int per_class, uint64_t seed);

// ContrastiveCrop's box update on test-sized images: batches of 4, 2 loader threads. An untrained
// model's attention is nearly flat, so only a high `threshold` (its peaks) makes a small box.
ObjectLocatorOptions small_locator_options(int64_t image_size, double threshold);

}  // namespace bam::test
