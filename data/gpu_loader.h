// The GPU data path (DESIGN.md section 2): CPU threads parse each JPEG and Huffman-decode it into
// DCT coefficients in a ring of page-locked slots; a launcher thread uploads each finished batch on
// the loader's own stream and runs the batched kernels (kernels/cuda/jpeg_batch.h, then
// kernels/cuda/crop_batch.h) that write the crops straight into device tensors. The trainer's
// stream waits on an event, never the host, so batch k+1 is decoded and augmented while the model
// trains on batch k. Files the GPU does not decode (PNG, progressive, CMYK, Exif-rotated) are
// decoded on the CPU and uploaded as pixels in the same batch. Random choices are the CPU loader's
// (same counter-based keys), so the crops match MultiCropLoader's; batches are numbered across
// epochs as there (data/batch_sequence.h), so the next epoch's first batches are ready on time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/gpu_batch_plan.h"
#include "data/loader.h"
#include "data/unreadable_files.h"

namespace bam::data {

class GpuCropLoader : public CropLoader {
 public:
  GpuCropLoader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size, uint64_t seed, LoaderOptions options);
  ~GpuCropLoader() override;

  int64_t steps_per_epoch() const override;
  void start_epoch(int64_t epoch, int64_t first_step = 0) override;
  Batch next() override;
  const Dataset& dataset() const override { return dataset_; }
  int64_t skipped_files() const override;
  int64_t images_decoded() const override { return gpu_images_.load() + cpu_images_.load(); }
  void set_epochs(int64_t epochs) override;
  std::string describe_buffers() const override;
  void set_object_boxes(std::shared_ptr<const ObjectBoxes> boxes) override;

  // Images decoded per stage so far (tests and bench-data): images whose coefficients went to the
  // GPU, images decoded to pixels on the CPU.
  int64_t gpu_decoded_images() const { return gpu_images_.load(); }
  int64_t cpu_decoded_images() const { return cpu_images_.load(); }

 private:
  // One batch being prepared on the host: pinned coefficients and pixels, filled by the workers.
  struct HostSlot {
    int64_t batch = -1;  // its number in sequence_
    int64_t done = 0;
    std::shared_ptr<const std::vector<int64_t>> order;  // of the batch's epoch
    std::shared_ptr<const ObjectBoxes> boxes;           // ContrastiveCrop's, when set
    bool uploaded = true;  // free for the workers (its previous upload has completed)
    bool prepared = false;            // its vectors are sized for the batch (false: that failed, the batch is spoiled)
    int16_t* coefficients = nullptr;  // pinned arena
    int64_t coefficient_capacity = 0;
    std::atomic<int64_t> coefficients_used{0};
    uint8_t* pixels = nullptr;  // pinned arena for CPU-decoded images
    int64_t pixel_capacity = 0;
    std::atomic<int64_t> pixels_used{0};
    // Bytes that did not fit the arenas in this batch: the arenas grow by that much after its upload.
    std::atomic<int64_t> coefficients_missed{0}, pixels_missed{0};
    std::vector<GpuBatchImage> images;
    std::vector<int64_t> pixel_offsets;          // per image in `pixels`, -1: in overflow[b]
    std::vector<std::vector<uint8_t>> overflow;  // pixels that did not fit the pinned arena
    std::vector<int64_t> indices, labels;
    std::vector<int64_t> crop_keys;  // the images asked for (indices holds any substitute's)
    void* upload_done = nullptr;  // cudaEvent_t: the slot's bytes are on the device
    uint8_t* tables = nullptr;  // pinned staging of the task tables
    int64_t table_capacity = 0;
  };
  // Device buffers written by one batch's kernels and read by the trainer.
  struct OutputSlot {
    std::vector<void*> groups;
    void* ready = nullptr;      // cudaEvent_t: the batch's kernels are done
    cuda::StreamMark released;  // on the trainer's stream, behind its work on the batch last in it
    int64_t batch = -1;
    std::vector<int64_t> indices, labels, requested;  // of the batch in it
  };

  // Times how long the trainer's stream waits for a batch's `ready` event: events on that stream
  // just before and just after the wait. Read when the pair comes round again in the ring, by
  // which time the stream has long passed them.
  struct WaitTimer {
    void* before = nullptr;  // cudaEvent_t
    void* after = nullptr;
    bool recorded = false;
  };
  static constexpr int kWaitTimers = 4;

  void worker_loop();
  void launcher_loop();
  void produce(int64_t batch, int64_t b, HostSlot& slot);  // image b of batch number `batch`
  void launch(int64_t batch, HostSlot& slot, OutputSlot& out);
  void ensure_device(void** ptr, int64_t* capacity, int64_t bytes, const char* what);
  // After a slot's upload (on the launcher thread): the arenas' sizes to come grow to what its
  // batch wanted, and the slot's arenas to those sizes.
  void grow_host_arenas(HostSlot& slot);
  void allocate_resources();  // pinned slots, stream, output slots, the decode buffers
  void free_resources();      // all of it, whatever allocate_resources got to
  void stop_threads();        // stops and joins the workers and the launcher (those that started)
  // Stops the workers and the launcher, lets what is running finish, releases the output slots
  // after the trainer's queued work and drops every batch prepared, so that the loader starts
  // again at batch `first` (under the lock).
  void drop_prepared(std::unique_lock<std::mutex>& lock, int64_t first);
  int64_t work_end() const;  // run_ahead_end of the loader's state (under the lock)

  Dataset dataset_;
  AugmentRecipe recipe_;
  int64_t batch_;
  uint64_t seed_;
  LoaderOptions options_;
  int device_ = 0;  // the CUDA device its buffers, stream and batches live on (the process's, at construction)
  CropGroupLayout groups_;  // the crops of each resolution group: views and pixel sizes
  cuda_kernels::CropNormalize normalize_{};

  std::vector<std::unique_ptr<HostSlot>> host_slots_;
  std::vector<OutputSlot> output_slots_;
  std::vector<WaitTimer> wait_timers_;  // batch g's in wait_timers_[g % kWaitTimers]
  void* stream_ = nullptr;              // cudaStream_t of the loader
  // Device working memory, shared by the batches (the loader's stream orders them).
  void *d_coefficients_ = nullptr, *d_planes_ = nullptr, *d_rgb_ = nullptr, *d_tables_ = nullptr;
  void *d_scratch_ = nullptr, *d_pixels_ = nullptr, *d_row_sums_ = nullptr, *d_means_ = nullptr;
  int64_t coefficients_bytes_ = 0, planes_bytes_ = 0, rgb_bytes_ = 0, tables_bytes_ = 0;
  int64_t scratch_bytes_ = 0, pixels_bytes_ = 0, row_sums_bytes_ = 0, means_bytes_ = 0;
  size_t pinned_bytes_ = 0, output_bytes_ = 0;
  int64_t coefficient_arena_target_ = 0, pixel_arena_target_ = 0;  // every slot's, from the largest batch yet
  bool growth_failed_ = false;  // page-locked memory ran out: the arenas stay as they are
  std::atomic<int64_t> gpu_images_{0}, cpu_images_{0}, coefficient_overflows_{0}, pixel_overflows_{0};

  mutable std::mutex mutex_;
  std::condition_variable work_ready_, slot_done_, launched_, idle_;
  std::vector<std::thread> workers_;
  std::thread launcher_;
  bool stop_ = false;
  int64_t restarts_ = 0;  // bumps when start_epoch drops the prepared batches, so the launcher notices
  BatchSequence sequence_;
  BatchCursor next_;                              // the image the workers take next
  int64_t end_batch_ = 0;                         // they take images of the batches before this one
  int64_t launch_next_ = 0, launch_end_ = 0;      // the batch the launcher launches next, and its end
  int64_t consumer_next_ = 0, consumer_end_ = 0;  // next()'s, and the end of the epoch started
  int active_ = 0;
  bool launching_ = false;
  BatchFailure failure_;
  std::exception_ptr launcher_failure_;  // the launcher thread could not start: kept across epochs
  std::shared_ptr<const ObjectBoxes> boxes_;  // ContrastiveCrop's (null: RandomResizedCrop)
  UnreadableFiles unreadable_;
};

}  // namespace bam::data
