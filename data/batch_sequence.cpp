// Batch numbers across epochs, the epochs' visiting orders, and the batch a failure spoils.
#include "data/batch_sequence.h"

#include <algorithm>

#include "data/loader_support.h"
#include "engine/error.h"

namespace bam::data {

BatchSequence::BatchSequence(const Dataset& dataset, int64_t batch, bool drop_last, bool shuffle, uint64_t seed,
                             LoaderShard shard)
    : num_images_(dataset.size()), batch_(batch), shard_(shard), shuffle_(shuffle), seed_(seed) {
  BAM_CHECK(shard.world_size >= 1 && shard.rank >= 0 && shard.rank < shard.world_size,
            "loader: rank {} of {} is not a valid shard", shard.rank, shard.world_size);
  BAM_CHECK(shard.world_size == 1 || drop_last, "loader: a sharded loader ({} ranks) needs drop_last",
            shard.world_size);
  check_loader_batch(dataset, batch * shard.world_size, drop_last);
  steps_ = loader_steps_per_epoch(num_images_, batch * shard.world_size, drop_last);
}

int64_t BatchSequence::rows(int64_t g) const { return std::min(batch_, num_images_ - first_position(g)); }

std::shared_ptr<const std::vector<int64_t>> BatchSequence::order(int64_t epoch) {
  for (const auto& [e, order] : orders_)
    if (e == epoch) return order;
  auto order = std::make_shared<const std::vector<int64_t>>(loader_visit_order(num_images_, seed_, epoch, shuffle_));
  if (orders_.size() == 2) orders_.erase(orders_.begin());
  orders_.emplace_back(epoch, order);
  return order;
}

void BatchFailure::note(int64_t batch, std::exception_ptr error) {
  if (error_ && first_ <= batch) return;
  error_ = std::move(error);
  first_ = batch;
}

}  // namespace bam::data
