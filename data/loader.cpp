// Loader threads, batch slots and the replacement of undecodable files.
#include "data/loader.h"

#include <fmt/format.h>

#include <cstdio>

#include "data/loader_support.h"
#include "engine/cuda.h"
#include "engine/error.h"

namespace bam::data {

MultiCropLoader::MultiCropLoader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size, uint64_t seed,
                                 LoaderOptions options)
    : dataset_(std::move(dataset)),
      recipe_(recipe),
      batch_(batch_size),
      seed_(seed),
      options_(options),
      groups_(crop_group_layout(recipe_, options_)),
      sequence_(dataset_, batch_size, options.drop_last, options.shuffle, seed, options.shard) {
  // Buffers are allocated once: page-locked when a GPU will read them.
  pinned_ = cuda::is_available();
  slots_.resize(static_cast<size_t>(std::max(1, options_.prefetch)) + 1);
  const int threads = std::max(1, options_.threads);
  try {
    for (Slot& slot : slots_) {
      for (size_t g = 0; g < groups_.views.size(); ++g) {
        size_t bytes = sizeof(float) * groups_.views[g] * batch_ * 3 * groups_.sizes[g] * groups_.sizes[g];
        void* p = cuda::host_allocate_pinned(bytes);
        allocations_.push_back(p);
        slot.groups.push_back(static_cast<float*>(p));
        buffer_bytes_ += bytes;
      }
    }
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (const std::exception& e) {
    // No destructor runs for a constructor that throws: stop the threads started so far (a joinable
    // std::thread destroyed would end the process) and free the buffers, then say what failed.
    stop_workers();
    for (void* p : allocations_) cuda::host_free_pinned(p);
    fail("CPU loader: {} batch slots of {} images ({:.1f} MiB so far) and {} decoding threads (--num_workers): {}",
         slots_.size(), batch_, static_cast<double>(buffer_bytes_) / (1 << 20), threads, e.what());
  }
}

void MultiCropLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
}

MultiCropLoader::~MultiCropLoader() {
  stop_workers();
  try {
    hand_back_lent_slot();
    for (Slot& slot : slots_) slot.handed_back.wait();  // an upload may still read the buffers
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: CPU loader: waiting for uploads from its buffers failed: %s\n", e.what());
  }
  for (void* p : allocations_) cuda::host_free_pinned(p);
}

void MultiCropLoader::hand_back_lent_slot() {
  if (lent_slot_ < 0) return;
  if (pinned_) slots_[lent_slot_].handed_back.record();
  lent_slot_ = -1;
}

int64_t MultiCropLoader::steps_per_epoch() const { return sequence_.steps_per_epoch(); }

std::string MultiCropLoader::describe_buffers() const {
  return fmt::format("CPU loader: {} threads, {:.1f} MiB of {} batch buffers", std::max(1, options_.threads),
                     buffer_bytes_ / 1048576.0, pinned_ ? "page-locked" : "host");
}

int64_t MultiCropLoader::skipped_files() const { return unreadable_.count(); }

void MultiCropLoader::drop_prepared(std::unique_lock<std::mutex>& lock, int64_t first) {
  end_batch_ = next_.batch;
  idle_.wait(lock, [&] { return active_ == 0; });
  for (Slot& s : slots_) {
    s.batch = -1;
    s.done = 0;
  }
  next_ = {first, 0};
  consumer_next_ = first;
  failure_.clear();
}

int64_t MultiCropLoader::work_end() const {
  return run_ahead_end(sequence_, consumer_end_, options_.epochs, boxes_.get());
}

void MultiCropLoader::start_epoch(int64_t epoch, int64_t first_step) {
  std::unique_lock<std::mutex> lock(mutex_);
  check_boxes_known(boxes_.get(), epoch);
  unreadable_.retry_all();
  hand_back_lent_slot();
  const int64_t first = sequence_.start_number(epoch, first_step);
  // Not where the workers have got to (or they failed): let the work in progress finish before
  // the slots are reused, and drop what they prepared.
  if (first != consumer_next_ || failure_.any()) drop_prepared(lock, first);
  consumer_end_ = sequence_.number(epoch + 1, 0);
  end_batch_ = work_end();
  lock.unlock();
  work_ready_.notify_all();
}

void MultiCropLoader::set_epochs(int64_t epochs) {
  std::unique_lock<std::mutex> lock(mutex_);
  options_.epochs = epochs;
  end_batch_ = work_end();  // once started: from now on
  lock.unlock();
  work_ready_.notify_all();
}

void MultiCropLoader::set_object_boxes(std::shared_ptr<const ObjectBoxes> boxes) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (consumer_next_ < consumer_end_) check_boxes_known(boxes.get(), sequence_.epoch(consumer_next_));  // mid-epoch
  hand_back_lent_slot();
  drop_prepared(lock, consumer_next_);  // prepared with the boxes before
  boxes_ = std::move(boxes);
  end_batch_ = work_end();
  lock.unlock();
  work_ready_.notify_all();
}

void MultiCropLoader::worker_loop() {
  for (;;) {
    int64_t g, b;
    bool prepared;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const int64_t ahead = static_cast<int64_t>(slots_.size()) - 1;
      work_ready_.wait(lock,
                       [&] { return stop_ || (next_.batch < end_batch_ && next_.batch < consumer_next_ + ahead); });
      if (stop_) return;
      g = next_.batch;
      b = next_.row;
      next_.advance(sequence_);
      ++active_;
      Slot& slot = slots_[g % slots_.size()];
      if (slot.batch != g) {
        // Allocations (the epoch's order, the rows): one that fails spoils the batch, as a failure
        // below does, and the slot is taken for batch g only once everything it needs is there.
        try {
          auto order = sequence_.order(sequence_.epoch(g));
          std::vector<int64_t> indices(static_cast<size_t>(sequence_.rows(g)), -1);
          std::vector<int64_t> labels(indices.size(), -1), requested(indices.size(), -1);
          slot.order = std::move(order);
          slot.indices = std::move(indices);
          slot.labels = std::move(labels);
          slot.requested = std::move(requested);
          slot.boxes = boxes_;
          slot.batch = g;
          slot.done = 0;
        } catch (...) {
          failure_.note(g, std::current_exception());
        }
      }
      prepared = slot.batch == g;
    }
    Slot& slot = slots_[g % slots_.size()];
    if (prepared) {
      try {
        slot.handed_back.wait();  // an upload from the batch this slot held before has read it
        produce(g, b, slot);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        failure_.note(g, std::current_exception());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (prepared) ++slot.done;  // else the slot still counts another batch's images
      --active_;
    }
    batch_ready_.notify_all();
    idle_.notify_all();
  }
}

void MultiCropLoader::produce(int64_t batch, int64_t b, Slot& slot) {
  DecodedImage image;
  const int64_t position = sequence_.first_position(batch) + b;
  const int64_t index = unreadable_.first_decodable(*slot.order, position, dataset_.root, [&](int64_t candidate) {
    image = decode_image_file(dataset_.files[candidate], loader_decode_options());
  });
  // The crops' random key: the image asked for, also where another one stands in for it (whose own
  // key would repeat its crops at its own place in the epoch, in the same batch perhaps).
  const int64_t key = (*slot.order)[static_cast<size_t>(position % static_cast<int64_t>(slot.order->size()))];
  ++images_decoded_;
  const int64_t rows = sequence_.rows(batch);
  const auto epoch = static_cast<uint32_t>(sequence_.epoch(batch));
  slot.indices[b] = index;
  slot.labels[b] = dataset_.labels[index];
  slot.requested[b] = key;
  if (options_.eval_transform) {
    const int S = options_.eval_size;
    float* out = slot.groups[0] + b * 3 * S * S;
    if (options_.eval_whole_image)
      render_crop(image, whole_image_params(image.width, image.height, S), recipe_, out);
    else
      render_eval(image, S, recipe_, out);
    return;
  }
  const std::optional<CropPlacement> placement =
      slot.boxes ? slot.boxes->placement(sequence_.epoch(batch), index) : std::nullopt;
  uint32_t crop = 0;
  for (size_t g = 0; g < groups_.views.size(); ++g) {
    const int64_t S = groups_.sizes[g];
    for (int64_t v = 0; v < groups_.views[g]; ++v, ++crop) {
      CropParams p =
          sample_crop(recipe_, image.width, image.height, seed_, epoch,
                      static_cast<uint32_t>(dataset_.first_index + key), crop, placement ? &*placement : nullptr);
      render_crop(image, p, recipe_, slot.groups[g] + (v * rows + b) * 3 * S * S);
    }
  }
}

MultiCropLoader::Batch MultiCropLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  hand_back_lent_slot();  // the batch before is refilled from here on
  const int64_t g = consumer_next_;
  BAM_CHECK(g < consumer_end_, "loader: no batch left in the epoch (call start_epoch)");
  Slot& slot = slots_[g % slots_.size()];
  const int64_t rows = sequence_.rows(g);
  batch_ready_.wait(lock, [&] { return failure_.spoils(g) || (slot.batch == g && slot.done == rows); });
  if (failure_.spoils(g)) failure_.rethrow();
  Batch batch;
  for (size_t k = 0; k < groups_.views.size(); ++k) {
    const int64_t S = groups_.sizes[k];
    batch.groups.push_back(from_blob(slot.groups[k], {groups_.views[k] * rows, 3, S, S}, DType::f32));
  }
  batch.indices = slot.indices;
  batch.labels = slot.labels;
  batch.requested = slot.requested;
  lent_slot_ = static_cast<int64_t>(g % slots_.size());
  ++consumer_next_;
  lock.unlock();
  work_ready_.notify_all();
  return batch;
}

}  // namespace bam::data
