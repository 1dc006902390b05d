// Crop groups, epoch order, the batch-size check and arena reservations for both loaders.
#include "data/loader_support.h"

#include <algorithm>
#include <limits>

#include "engine/error.h"

namespace bam::data {

CropGroupLayout crop_group_layout(const AugmentRecipe& recipe, const LoaderOptions& options) {
  CropGroupLayout g;
  if (options.eval_transform) {
    g.views = {1};
    g.sizes = {options.eval_size};
    return g;
  }
  g.views.push_back(recipe.global_crops);
  g.sizes.push_back(recipe.global_size);
  if (recipe.local_crops > 0) {
    g.views.push_back(recipe.local_crops);
    g.sizes.push_back(recipe.local_size);
  }
  return g;
}

int64_t loader_steps_per_epoch(int64_t num_images, int64_t batch, bool drop_last) {
  return drop_last ? num_images / batch : (num_images + batch - 1) / batch;
}

std::vector<int64_t> loader_visit_order(int64_t num_images, uint64_t seed, int64_t epoch, bool shuffle) {
  if (shuffle) return epoch_order(num_images, seed, epoch);
  std::vector<int64_t> order(static_cast<size_t>(num_images));
  for (int64_t i = 0; i < num_images; ++i) order[i] = i;
  return order;
}

void check_loader_batch(const Dataset& dataset, int64_t batch, bool drop_last) {
  BAM_CHECK(batch >= 1, "loader: batch size must be positive, got {}", batch);
  BAM_CHECK(!drop_last || dataset.size() >= batch, "{}: {} images are fewer than one batch of {}", dataset.root,
            dataset.size(), batch);
}

int64_t run_ahead_end(const BatchSequence& sequence, int64_t consumer_end, int64_t epochs, const ObjectBoxes* boxes) {
  if (consumer_end == 0) return 0;
  const int64_t end = sequence.run_end(consumer_end, epochs);
  if (!boxes || boxes->until_epoch == std::numeric_limits<int64_t>::max()) return end;
  return std::min(end, sequence.number(boxes->until_epoch, 0));
}

void check_boxes_known(const ObjectBoxes* boxes, int64_t epoch) {
  BAM_CHECK(!boxes || epoch < boxes->until_epoch,
            "loader: epoch {} crops with ContrastiveCrop boxes that are not known yet (they are known for the epochs "
            "before {}; renew them with set_object_boxes first)",
            epoch, boxes ? boxes->until_epoch : 0);
}

int64_t reserve_in_arena(std::atomic<int64_t>& used, int64_t bytes, int64_t capacity) {
  int64_t at = used.load();
  do {
    if (at + bytes > capacity) return -1;
  } while (!used.compare_exchange_weak(at, at + bytes));
  return at;
}

bool release_in_arena(std::atomic<int64_t>& used, int64_t at, int64_t bytes) {
  int64_t end = at + bytes;
  return used.compare_exchange_strong(end, at);
}

}  // namespace bam::data
