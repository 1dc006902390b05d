// The prefetching multi-crop loader: background threads decode images and render their crops
// into preallocated batch buffers (page-locked when CUDA is present), a few batches ahead of
// the trainer. Crops of one resolution form one tensor [n_views * B, 3, S, S], crop-major.
// Results do not depend on the thread count: every random choice is keyed by (seed, epoch,
// image index, crop index). A file that fails to decode is reported once, counted, and replaced
// by the next image of the epoch's order.
#pragma once

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/augment.h"
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
  int prefetch = 2;        // batches prepared ahead of the one in use
  bool drop_last = true;   // training; false gives a final partial batch (evaluation)
  bool eval_transform = false;  // one centre crop per image (render_eval) instead of multi-crop
  int eval_size = 224;
  bool shuffle = true;
  DataBackend backend = DataBackend::cpu;
  DType gpu_output = DType::f32;  // the GPU path writes crops in f32 or bf16
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
  double wait_seconds = 0;       // time next() blocked waiting for the workers
};

// What bamtrain and bamprobe see of a loader.
class CropLoader {
 public:
  using Batch = LoaderBatch;
  virtual ~CropLoader() = default;
  virtual int64_t steps_per_epoch() const = 0;
  // Starts an epoch at batch `first_step` (a resumed run skips what it already trained on).
  virtual void start_epoch(int64_t epoch, int64_t first_step = 0) = 0;
  // The next batch of the epoch; throws if the epoch is over or a worker failed.
  virtual Batch next() = 0;
  virtual const Dataset& dataset() const = 0;
  virtual int64_t skipped_files() const = 0;
  // The buffers allocated at start, in words (pinned and device memory).
  virtual std::string describe_buffers() const = 0;
};

// The loader of options.backend. The gpu backend needs a CUDA build and a device; otherwise this
// fails saying why.
std::unique_ptr<CropLoader> make_crop_loader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size,
                                             uint64_t seed, LoaderOptions options);

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
  std::string describe_buffers() const override;
  size_t buffer_bytes() const { return buffer_bytes_; }

 private:
  struct Slot {
    std::vector<float*> groups;  // per resolution
    int64_t step = -1;
    int64_t done = 0;
    std::vector<int64_t> indices, labels;
    // Recorded on the current stream when the caller is done queueing work on this batch (at the
    // next next() or start_epoch()): the workers wait for it before refilling the buffers.
    cuda::StreamMark handed_back;
  };
  void worker_loop();
  void produce(int64_t step, int64_t b, Slot& slot);
  // The caller is done queueing work on the batch it holds: marks the stream for its slot.
  void hand_back_lent_slot();
  int64_t batch_rows(int64_t step) const;

  Dataset dataset_;
  AugmentRecipe recipe_;
  int64_t batch_;
  uint64_t seed_;
  LoaderOptions options_;
  std::vector<int64_t> group_views_, group_sizes_;
  std::vector<Slot> slots_;
  std::vector<void*> allocations_;
  size_t buffer_bytes_ = 0;
  bool pinned_ = false;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_, batch_ready_, idle_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  int64_t next_item_ = 0, end_item_ = 0, consumer_next_ = 0;
  int64_t lent_slot_ = -1;  // the slot of the batch the caller holds (-1: none)
  int active_ = 0;
  std::exception_ptr failure_;
  UnreadableFiles unreadable_;
};

}  // namespace bam::data
