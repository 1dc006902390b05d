// ContrastiveCrop in the training loop (data/object_boxes.h has the boxes themselves): when the
// boxes are used and renewed, following the official main_pretrain.py, and the renewal itself: the
// training images, each resized whole to a square, through the backbone, and a box read off each
// one's last-block CLS attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "data/augment.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/object_boxes.h"
#include "models/vit.h"

namespace bam {

// The official rule, with --loc_interval L and --warmup_epochs W: crops use the boxes from epoch
// max(L, W) + 1 on; the boxes are renewed after every epoch e >= W with e % L == 0, except the
// run's last (they start as the whole image).
struct ContrastiveCropSchedule {
  int64_t loc_interval = 20, warmup_epochs = 10;
  int64_t first_epoch() const { return std::max(loc_interval, warmup_epochs) + 1; }
  // The first epoch after which they may be renewed: the first multiple of L from W on.
  int64_t first_renewal() const { return (warmup_epochs + loc_interval - 1) / loc_interval * loc_interval; }
  bool renews_after(int64_t epoch, int64_t epochs) const {
    return epoch >= warmup_epochs && epoch != epochs - 1 && epoch % loc_interval == 0;
  }
  // The schedule of a run of `to_epochs` epochs with the proportions of this one's in a run of
  // `from_epochs` (a schedule fitted to a time budget keeps --epochs' proportions): the warm-up
  // rounded, the interval rounded and at least one epoch. The fitted run renews its boxes about as
  // often as the requested one, at the same points of its length.
  ContrastiveCropSchedule scaled(int64_t from_epochs, int64_t to_epochs) const {
    const double f = static_cast<double>(to_epochs) / static_cast<double>(std::max<int64_t>(1, from_epochs));
    return {std::max<int64_t>(1, std::llround(static_cast<double>(loc_interval) * f)),
            std::llround(static_cast<double>(warmup_epochs) * f)};
  }
  // The first epoch whose boxes are not known while training `epoch`: the one after the next
  // renewal from `epoch` on (none within the run's `epochs`: the largest number).
  int64_t known_until(int64_t epoch, int64_t epochs) const {
    for (int64_t e = epoch; e < epochs - 1; ++e)
      if (renews_after(e, epochs)) return e + 1;
    return std::numeric_limits<int64_t>::max();
  }
};

struct ObjectLocatorOptions {
  int64_t image_size = 224;  // --ccrop_img_size: each image resized whole to this square
  double threshold = 0.1;    // --box_thresh
  int64_t batch_size = 64;
  int threads = 4;
  data::AugmentRecipe recipe;  // the normalisation
  data::DataBackend backend = data::DataBackend::cpu;
};

// One box per image of `dataset` (dataset order) from the backbone's last-block attention, in f32
// as the official update_box runs it (put the backbone in eval mode). An image that cannot be
// decoded keeps the whole image as its box (the loader reports it and puts another image in its
// place).
std::vector<data::ObjectBox> locate_objects(const VisionTransformer& backbone, const data::Dataset& dataset,
                                            const ObjectLocatorOptions& options);

}  // namespace bam
