// Where bamtrain's batches come from: an interface with one implementation per source (the JPEG
// folder loader, generated data). A batch holds every crop of B images, grouped by resolution.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/object_boxes.h"
#include "engine/tensor.h"

namespace bam {

struct TrainConfig;

struct CropBatch {
  // Per resolution (global first, then local): [n_views * B, C, S, S], crop-major (all B images
  // of view 0, then view 1, ...).
  std::vector<Tensor> groups;
  int64_t batch_size = 0;
  // How long the trainer's GPU stream stood waiting for earlier batches' decode and crops (the
  // GPU loader's kernels), learned a few batches late; the trainer times its own wait for next().
  double device_wait_seconds = 0;
};

class TrainData {
 public:
  virtual ~TrainData() = default;
  virtual int64_t num_images() const = 0;
  virtual int64_t steps_per_epoch() const = 0;  // full batches only (drop_last)
  // Prepares the epoch's order (deterministic from the seed and epoch); the first batch returned
  // is batch `first_step` (a run resumed mid-epoch skips the ones it already trained on).
  virtual void start_epoch(int64_t epoch, int64_t first_step = 0) = 0;
  // Batch `step` of the current epoch, steps taken in order.
  virtual CropBatch next() = 0;
  // The run's length in epochs, set (and reset, when a schedule is refitted) by the trainer: a
  // source that prepares batches ahead goes on into the next epoch's first batches up to there.
  virtual void set_epochs(int64_t epochs) { (void)epochs; }
  virtual std::string describe() const = 0;
  // ContrastiveCrop (bam/contrastive_crop.h): the image files, to locate objects in, and the boxes
  // the crops are placed by from now on (CropLoader::set_object_boxes). Generated data has neither.
  virtual const data::Dataset* images() const { return nullptr; }
  virtual void set_object_boxes(std::shared_ptr<const data::ObjectBoxes> boxes);
};

// Generated images for tests and benchmarks ("synthetic:N" as --data_path): N images, each one of
// a few smooth random patterns; every crop of an image shows its pattern with its own noise,
// flip and brightness, so there is something to be invariant to. Deterministic in (seed, epoch,
// step).
std::unique_ptr<TrainData> make_synthetic_data(const TrainConfig& config, int64_t num_images);

// Builds the source --data_path names.
std::unique_ptr<TrainData> make_train_data(const TrainConfig& config);

}  // namespace bam
