// ContrastiveCrop's box renewal (data/object_boxes.h has the boxes themselves, and
// contrastive_crop_schedule.h when they are renewed and used): the training images, each resized
// whole to a square, through the backbone, and a box read off each one's last-block CLS attention.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bam/contrastive_crop_schedule.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/object_boxes.h"
#include "models/vit.h"

namespace bam {

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
