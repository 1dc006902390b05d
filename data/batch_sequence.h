// How both loaders count their batches: one number across epochs, so that preparing the next
// epoch's first batches while the current one ends is no different from preparing the next batch
// within an epoch; and how a worker's failure reaches the batch it spoils and no other.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <utility>
#include <vector>

#include "data/dataset.h"

namespace bam::data {

// Data parallelism: this process's part of every batch (rank of world_size; see BatchSequence).
struct LoaderShard {
  int rank = 0, world_size = 1;
};

// A loader's batches numbered across epochs: batch g is step g % S of epoch g / S (S steps per
// epoch). The loaders' workers count in these numbers, so running on from the last batch of an
// epoch into the first of the next (LoaderOptions::epochs) is the same as running on within one,
// and a batch's number alone says which images it holds and which random keys its crops draw.
class BatchSequence {
 public:
  // Fails naming the dataset when the batch size cannot work (check_loader_batch). With a shard
  // (data parallelism), each step's images are the world * batch next ones of the epoch's order
  // and rank `rank` takes the batch at rank * batch among them (torch's DistributedSampler hands
  // out every world-th image instead; this way rank r's rows are images r*B.. of the global batch,
  // the order the loss gathers them in). Only whole global batches: drop_last.
  BatchSequence(const Dataset& dataset, int64_t batch, bool drop_last, bool shuffle, uint64_t seed,
                LoaderShard shard = {});
  int64_t steps_per_epoch() const { return steps_; }
  int64_t number(int64_t epoch, int64_t step) const { return epoch * steps_ + step; }
  // The batch start_epoch(epoch, first_step) asks for: first_step is clamped to the epoch's end (a
  // run resumed after an epoch's last step starts nothing of it).
  int64_t start_number(int64_t epoch, int64_t first_step) const {
    return number(epoch, first_step < steps_ ? first_step : steps_);
  }
  // The first batch a loader does not prepare: the end of the epoch being handed out
  // (consumer_end) or of the run's last epoch (LoaderOptions::epochs), whichever is later.
  int64_t run_end(int64_t consumer_end, int64_t epochs) const {
    return consumer_end > number(epochs, 0) ? consumer_end : number(epochs, 0);
  }
  int64_t epoch(int64_t g) const { return g / steps_; }
  int64_t step(int64_t g) const { return g % steps_; }
  // Images in batch g: the batch size, less for an epoch's last batch when incomplete batches
  // are kept.
  int64_t rows(int64_t g) const;
  // Where batch g's first image sits in its epoch's visiting order.
  int64_t first_position(int64_t g) const { return (step(g) * shard_.world_size + shard_.rank) * batch_; }
  // The visiting order of `epoch` (loader_visit_order), computed once: the two epochs asked for
  // last are kept, which covers a batch of one epoch being rendered while the next one starts.
  // Not thread-safe (the loaders call it under their lock); what it returns stays valid.
  std::shared_ptr<const std::vector<int64_t>> order(int64_t epoch);

 private:
  int64_t num_images_, batch_, steps_ = 0;
  LoaderShard shard_;
  bool shuffle_;
  uint64_t seed_;
  std::vector<std::pair<int64_t, std::shared_ptr<const std::vector<int64_t>>>> orders_;  // (epoch, order)
};

// The image the workers take next: row `row` of batch `batch`, and the step past it.
struct BatchCursor {
  int64_t batch = 0, row = 0;
  void advance(const BatchSequence& sequence) {
    if (++row == sequence.rows(batch)) {
      ++batch;
      row = 0;
    }
  }
};

// The first error a loader's workers (or its launcher) met, and the batch it spoils. The batches
// before that one are whole and are handed out as usual; asking for that batch or a later one
// throws the error. So a failure in a batch prepared ahead, even one of the next epoch, does not
// take away the batches in front of it.
class BatchFailure {
 public:
  void note(int64_t batch, std::exception_ptr error);  // keeps the earliest batch's error
  bool spoils(int64_t batch) const { return error_ && first_ <= batch; }
  bool any() const { return static_cast<bool>(error_); }
  [[noreturn]] void rethrow() const { std::rethrow_exception(error_); }
  void clear() { error_ = nullptr; }

 private:
  std::exception_ptr error_;
  int64_t first_ = 0;
};

}  // namespace bam::data
