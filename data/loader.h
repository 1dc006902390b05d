// The prefetching multi-crop loader: background threads decode images and render their crops
// into preallocated batch buffers (page-locked when CUDA is present), a few batches ahead of
// the trainer. Crops of one resolution form one tensor [n_views * B, 3, S, S], crop-major.
// Results do not depend on the thread count: every random choice is keyed by (seed, epoch,
// image index, crop index). A file that fails to decode is reported once, counted, and replaced
// by the next image of the epoch's order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/augment.h"
#include "data/batch_sequence.h"
#include "data/dataset.h"
#include "data/unreadable_files.h"
#include "engine/cuda.h"
#include "engine/tensor.h"

namespace bam::data {

// Where batches are decoded and augmented: on CPU threads (MultiCropLoader) or, with CUDA, the
// hybrid GPU path (GpuCropLoader: Huffman decoding on CPU threads, everything else on the GPU).
enum class DataBackend { cpu, gpu };
const char* data_backend_name(DataBackend backend);

struct LoaderOptions {
  int threads = 4;
  // Batches prepared ahead of the one in use: `prefetch` for the CPU loader; prefetch + 2 for
  // the GPU loader (prefetch + 1 host slots, and one batch already in a device slot).
  int prefetch = 2;
  // The epochs of the run. The workers run on past the end of an epoch into the next one's first
  // batches while the caller finishes the epoch (its last steps, a checkpoint, a kNN check), up
  // to the end of this epoch count; start_epoch(e + 1) then keeps them. 0: only the epoch started
  // is prepared (a single pass, as in feature extraction).
  int64_t epochs = 0;
  bool drop_last = true;   // training; false gives a final partial batch (evaluation)
  bool eval_transform = false;  // one centre crop per image (render_eval) instead of multi-crop
  int eval_size = 224;
  // With eval_transform: the whole image resized to eval_size x eval_size instead (torchvision's
  // Resize((S, S)), the input of ContrastiveCrop's box update; whole_image_params).
  bool eval_whole_image = false;
  bool shuffle = true;
  DataBackend backend = DataBackend::cpu;
  DType gpu_output = DType::f32;  // the GPU path writes crops in f32 or bf16
  LoaderShard shard = {};         // data parallelism: this rank's part of each batch
};

// `groups` lives in the loader's buffers until the next next(): the CPU loader's workers refill a
// host batch after it. Its page-locked memory makes an upload (.to(cuda)) asynchronous; next()
// marks the current stream (cuda::StreamMark) and the workers refill the previous batch's buffer
// only once the work queued before the mark has run, so an upload queued before the next next()
// (or start_epoch()) reads the batch it was given, without the caller waiting. The GPU loader's
// batches are reused only after the trainer's stream is done with them (events).
struct LoaderBatch {
  std::vector<Tensor> groups;    // per resolution; on the GPU for the gpu backend
  std::vector<int64_t> indices;  // dataset index of each image
  std::vector<int64_t> labels;   // its label (-1 when unlabelled)
  // The image asked for at each row: it differs from `indices` where another image stood in for a
  // file that could not be decoded (training takes the stand-in; evaluation leaves the row out).
  std::vector<int64_t> requested;
  // The GPU loader's: how long the trainer's stream stood waiting for earlier batches' kernels
  // (decode and crops), as far as it is known by now (a few batches late). 0 for the CPU loader.
  double device_wait_seconds = 0;
};

// What bamtrain and bamprobe see of a loader.
class CropLoader {
 public:
  using Batch = LoaderBatch;
  virtual ~CropLoader() = default;
  virtual int64_t steps_per_epoch() const = 0;
  // Starts an epoch at batch `first_step` (a resumed run skips what it already trained on). The
  // batches prepared ahead are kept when this is where the loader had got to (the next epoch from
  // its start, after the last one was taken); anywhere else, they are dropped.
  virtual void start_epoch(int64_t epoch, int64_t first_step = 0) = 0;
  // The next batch of the epoch; throws if the epoch is over, or the error of a worker that
  // failed on this batch (a failure in a later batch leaves the ones before it whole; the next
  // start_epoch then drops what was prepared and tries again).
  virtual Batch next() = 0;
  virtual const Dataset& dataset() const = 0;
  virtual int64_t skipped_files() const = 0;
  // Images decoded so far, in every batch prepared (taken or not); tests and benchmarks.
  virtual int64_t images_decoded() const = 0;
  // The run's epoch count (LoaderOptions::epochs), as the trainer's schedule sets it, and again
  // when it refits the schedule. Call it from the thread that calls start_epoch and next. It
  // takes effect at once but never ends the work before the epoch in progress is done; batches
  // already prepared past a shortened end stay until the next start_epoch.
  virtual void set_epochs(int64_t epochs) = 0;
  // The buffers allocated at start, in words (pinned and device memory).
  virtual std::string describe_buffers() const = 0;
  // ContrastiveCrop (data/object_boxes.h): training crops of the epochs from boxes->first_epoch on
  // are placed within each image's box; nothing of boxes->until_epoch or later is prepared until
  // the next call. Call it between epochs (or within one, with boxes known for it: a budget refit
  // that rescales the schedule before any box is used), from the thread that calls next(), once
  // the work on the batch it holds is queued (as for start_epoch): batches prepared ahead with
  // other boxes are dropped, and prepared again. Null: RandomResizedCrop everywhere (the default).
  virtual void set_object_boxes(std::shared_ptr<const ObjectBoxes> boxes) = 0;
};

// The loader of options.backend. The gpu backend needs a CUDA build and a device; otherwise this
// fails saying why.
std::unique_ptr<CropLoader> make_crop_loader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size,
                                             uint64_t seed, LoaderOptions options);

// The tensors of a batch: views per image and side, global crops first (or the one eval crop).
struct CropGroupLayout {
  std::vector<int64_t> views, sizes;
};

class MultiCropLoader : public CropLoader {
 public:
  MultiCropLoader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size, uint64_t seed, LoaderOptions options);
  ~MultiCropLoader();
  MultiCropLoader(const MultiCropLoader&) = delete;
  MultiCropLoader& operator=(const MultiCropLoader&) = delete;

  int64_t steps_per_epoch() const override;
  void start_epoch(int64_t epoch, int64_t first_step = 0) override;
  Batch next() override;
  const Dataset& dataset() const override { return dataset_; }
  int64_t skipped_files() const override;
  int64_t images_decoded() const override { return images_decoded_.load(); }
  void set_epochs(int64_t epochs) override;
  std::string describe_buffers() const override;
  void set_object_boxes(std::shared_ptr<const ObjectBoxes> boxes) override;
  size_t buffer_bytes() const { return buffer_bytes_; }

 private:
  struct Slot {
    std::vector<float*> groups;  // per resolution
    int64_t batch = -1;          // its number in sequence_
    int64_t done = 0;
    std::shared_ptr<const std::vector<int64_t>> order;  // of the batch's epoch
    std::shared_ptr<const ObjectBoxes> boxes;           // ContrastiveCrop's, when set
    std::vector<int64_t> indices, labels, requested;
    // Recorded on the current stream when the caller is done queueing work on this batch (at the
    // next next() or start_epoch()): the workers wait for it before refilling the buffers.
    cuda::StreamMark handed_back;
  };
  void worker_loop();
  void produce(int64_t batch, int64_t b, Slot& slot);  // image b of batch number `batch`
  // The caller is done queueing work on the batch it holds: marks the stream for its slot.
  void hand_back_lent_slot();
  void stop_workers();  // tells the workers to stop and joins them
  // Stops the workers, lets the images in progress finish and drops every batch prepared, so that
  // the workers start again at batch `first` (under the lock).
  void drop_prepared(std::unique_lock<std::mutex>& lock, int64_t first);
  int64_t work_end() const;  // run_ahead_end of the loader's state (under the lock)

  Dataset dataset_;
  AugmentRecipe recipe_;
  int64_t batch_;
  uint64_t seed_;
  LoaderOptions options_;
  CropGroupLayout groups_;  // the crops of each resolution group: views and pixel sizes
  std::vector<Slot> slots_;
  std::vector<void*> allocations_;
  size_t buffer_bytes_ = 0;
  bool pinned_ = false;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_, batch_ready_, idle_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  BatchSequence sequence_;
  BatchCursor next_;           // the image the workers take next
  int64_t end_batch_ = 0;      // they take images of the batches before this one
  int64_t consumer_next_ = 0;  // the batch next() hands out next
  int64_t consumer_end_ = 0;   // the end of the epoch started
  int64_t lent_slot_ = -1;  // the slot of the batch the caller holds (-1: none)
  std::shared_ptr<const ObjectBoxes> boxes_;  // ContrastiveCrop's (null: RandomResizedCrop)
  int active_ = 0;
  BatchFailure failure_;
  UnreadableFiles unreadable_;
  std::atomic<int64_t> images_decoded_{0};
};

}  // namespace bam::data
