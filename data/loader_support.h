// What the CPU loader (loader.h) and the GPU loader (gpu_loader.h) share: the crop groups of a
// batch, the steps and visiting order of an epoch, the batch-size check. (Both skip undecodable
// files with data/unreadable_files.h.)
#pragma once

#include <cstdint>
#include <vector>

#include "data/loader.h"

namespace bam::data {

// The tensors of a batch: views per image and side, global crops first (or the one eval crop).
struct CropGroupLayout {
  std::vector<int64_t> views, sizes;
};
CropGroupLayout crop_group_layout(const AugmentRecipe& recipe, const LoaderOptions& options);

int64_t loader_steps_per_epoch(int64_t num_images, int64_t batch, bool drop_last);
// The epoch's order (epoch_order when shuffling, else 0..n-1).
std::vector<int64_t> loader_visit_order(int64_t num_images, uint64_t seed, int64_t epoch, bool shuffle);

// Fails naming the dataset when a batch size cannot work (zero, or more images than there are
// when incomplete batches are dropped).
void check_loader_batch(const Dataset& dataset, int64_t batch, bool drop_last);

}  // namespace bam::data
