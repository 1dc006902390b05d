// Loader threads, batch slots and the replacement of undecodable files.
#include "data/loader.h"

#include <chrono>
#include <cstdio>

#include "data/loader_support.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include <fmt/format.h>

namespace bam::data {

MultiCropLoader::MultiCropLoader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size, uint64_t seed,
                                 LoaderOptions options)
    : dataset_(std::move(dataset)), recipe_(recipe), batch_(batch_size), seed_(seed), options_(options) {
  check_loader_batch(dataset_, batch_, options_.drop_last);
  const CropGroupLayout layout = crop_group_layout(recipe_, options_);
  group_views_ = layout.views;
  group_sizes_ = layout.sizes;
  // Buffers are allocated once: page-locked when a GPU will read them.
  pinned_ = cuda::is_available();
  slots_.resize(static_cast<size_t>(std::max(1, options_.prefetch)) + 1);
  for (Slot& slot : slots_) {
    for (size_t g = 0; g < group_views_.size(); ++g) {
      size_t bytes = sizeof(float) * group_views_[g] * batch_ * 3 * group_sizes_[g] * group_sizes_[g];
      void* p = cuda::host_allocate_pinned(bytes);
      allocations_.push_back(p);
      slot.groups.push_back(static_cast<float*>(p));
      buffer_bytes_ += bytes;
    }
  }
  int threads = std::max(1, options_.threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

MultiCropLoader::~MultiCropLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  for (auto& w : workers_) w.join();
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

int64_t MultiCropLoader::steps_per_epoch() const {
  return loader_steps_per_epoch(dataset_.size(), batch_, options_.drop_last);
}

int64_t MultiCropLoader::batch_rows(int64_t step) const {
  return std::min(batch_, dataset_.size() - step * batch_);
}

std::string MultiCropLoader::describe_buffers() const {
  return fmt::format("CPU loader: {} threads, {:.1f} MiB of {} batch buffers", std::max(1, options_.threads),
                     buffer_bytes_ / 1048576.0, pinned_ ? "page-locked" : "host");
}

int64_t MultiCropLoader::skipped_files() const { return unreadable_.count(); }

void MultiCropLoader::start_epoch(int64_t epoch, int64_t first_step) {
  std::unique_lock<std::mutex> lock(mutex_);
  hand_back_lent_slot();
  // Let work of the previous epoch finish before its slots are reused.
  end_item_ = next_item_;
  idle_.wait(lock, [&] { return active_ == 0; });
  epoch_ = epoch;
  order_ = loader_visit_order(dataset_.size(), seed_, epoch, options_.shuffle);
  const int64_t steps = steps_per_epoch();
  first_step = std::min(first_step, steps);
  consumer_next_ = first_step;
  next_item_ = first_step * batch_;
  end_item_ = options_.drop_last ? steps * batch_ : dataset_.size();
  for (Slot& s : slots_) {
    s.step = -1;
    s.done = 0;
  }
  failure_ = nullptr;
  lock.unlock();
  work_ready_.notify_all();
}

void MultiCropLoader::worker_loop() {
  for (;;) {
    int64_t item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const int64_t ahead = static_cast<int64_t>(slots_.size()) - 1;
      work_ready_.wait(lock, [&] {
        return stop_ || (next_item_ < end_item_ && next_item_ / batch_ < consumer_next_ + ahead);
      });
      if (stop_) return;
      item = next_item_++;
      ++active_;
      Slot& slot = slots_[(item / batch_) % slots_.size()];
      if (slot.step != item / batch_) {
        slot.step = item / batch_;
        slot.done = 0;
        slot.indices.assign(batch_rows(slot.step), -1);
        slot.labels.assign(batch_rows(slot.step), -1);
      }
    }
    const int64_t step = item / batch_, b = item % batch_;
    Slot& slot = slots_[step % slots_.size()];
    try {
      slot.handed_back.wait();  // an upload from the batch this slot held before has read it
      produce(step, b, slot);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_) failure_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++slot.done;
      --active_;
    }
    batch_ready_.notify_all();
    idle_.notify_all();
  }
}

void MultiCropLoader::produce(int64_t step, int64_t b, Slot& slot) {
  DecodedImage image;
  const int64_t index = unreadable_.first_decodable(order_, step * batch_ + b, dataset_.root, [&](int64_t candidate) {
    image = decode_image_file(dataset_.files[candidate]);
  });
  const int64_t rows = batch_rows(step);
  slot.indices[b] = index;
  slot.labels[b] = dataset_.labels[index];
  if (options_.eval_transform) {
    const int64_t S = options_.eval_size;
    render_eval(image, static_cast<int>(S), recipe_, slot.groups[0] + b * 3 * S * S);
    return;
  }
  uint32_t crop = 0;
  for (size_t g = 0; g < group_views_.size(); ++g) {
    const int64_t S = group_sizes_[g];
    for (int64_t v = 0; v < group_views_[g]; ++v, ++crop) {
      CropParams p = sample_crop(recipe_, image.width, image.height, seed_, static_cast<uint32_t>(epoch_),
                                 static_cast<uint32_t>(index), crop);
      render_crop(image, p, recipe_, slot.groups[g] + (v * rows + b) * 3 * S * S);
    }
  }
}

MultiCropLoader::Batch MultiCropLoader::next() {
  auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  hand_back_lent_slot();  // the batch before is refilled from here on
  const int64_t step = consumer_next_;
  BAM_CHECK(step * batch_ < end_item_, "loader: the epoch has no batch {} (call start_epoch)", step);
  Slot& slot = slots_[step % slots_.size()];
  const int64_t rows = batch_rows(step);
  batch_ready_.wait(lock, [&] { return failure_ || (slot.step == step && slot.done == rows); });
  if (failure_) std::rethrow_exception(failure_);
  Batch batch;
  for (size_t g = 0; g < group_views_.size(); ++g) {
    const int64_t S = group_sizes_[g];
    batch.groups.push_back(from_blob(slot.groups[g], {group_views_[g] * rows, 3, S, S}, DType::f32));
  }
  batch.indices = slot.indices;
  batch.labels = slot.labels;
  lent_slot_ = static_cast<int64_t>(step % slots_.size());
  ++consumer_next_;
  lock.unlock();
  work_ready_.notify_all();
  batch.wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return batch;
}

}  // namespace bam::data
