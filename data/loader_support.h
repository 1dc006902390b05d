// What the CPU loader (loader.h) and the GPU loader (gpu_loader.h) share: the crop groups of a
// batch, the steps and visiting order of an epoch, the batch-size check. (Both number their
// batches with data/batch_sequence.h and skip undecodable files with data/unreadable_files.h.)
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "data/loader.h"

namespace bam::data {

// The tensors of a batch (CropGroupLayout, loader.h).
CropGroupLayout crop_group_layout(const AugmentRecipe& recipe, const LoaderOptions& options);

int64_t loader_steps_per_epoch(int64_t num_images, int64_t batch, bool drop_last);
// The epoch's order (epoch_order when shuffling, else 0..n-1).
std::vector<int64_t> loader_visit_order(int64_t num_images, uint64_t seed, int64_t epoch, bool shuffle);

// Fails naming the dataset when a batch size cannot work (zero, or more images than there are
// when incomplete batches are dropped).
void check_loader_batch(const Dataset& dataset, int64_t batch, bool drop_last);

// The first batch a loader's workers may not take: the end of the epoch handed out or of the run's
// last epoch (BatchSequence::run_end), but not into an epoch whose ContrastiveCrop boxes are not
// known yet. 0 before the first start_epoch (consumer_end 0).
int64_t run_ahead_end(const BatchSequence& sequence, int64_t consumer_end, int64_t epochs, const ObjectBoxes* boxes);
// Fails when an epoch to be prepared (start_epoch's, or the one in progress when the boxes change)
// is one whose boxes are not known yet.
void check_boxes_known(const ObjectBoxes* boxes, int64_t epoch);

// Reserves `bytes` of an arena that several threads fill (the GPU loader's pinned slots): the
// offset of the reserved range, or -1 when it does not fit. Nothing is taken then, so one large
// image does not push every image after it out of the arena too.
int64_t reserve_in_arena(std::atomic<int64_t>& used, int64_t bytes, int64_t capacity);
// Gives back the range [at, at + bytes) that reserve_in_arena returned for an image that then did
// not use it (a damaged file, or one the CPU decodes after all), when nothing was reserved after
// it; returns whether it did. A range other threads have reserved past stays taken until the
// arena is emptied for the next batch.
bool release_in_arena(std::atomic<int64_t>& used, int64_t at, int64_t bytes);

}  // namespace bam::data
