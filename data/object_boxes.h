// ContrastiveCrop (Peng et al., CVPR 2022), the crops of the official BAM release by default: every
// few epochs the model's last-block attention locates the object in each training image as a box,
// and from then on the crops' centres are drawn from a U-shaped Beta(alpha, alpha) across that box
// instead of uniformly across the image, so that fewer crops miss the object (both views of a pair
// then show the same thing). This file holds the boxes and how one is read off an attention map;
// data/augment.cpp places a crop within one (sample_crop's CropPlacement); bam/contrastive_crop.h
// decides when the boxes are renewed.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "engine/tensor.h"

namespace bam::data {

// Where the object is, as fractions of the image's height and width (the official [h_min, w_min,
// h_max, w_max]); the whole image to begin with.
struct ObjectBox {
  float top = 0, left = 0, bottom = 1, right = 1;
};

// ContrastiveCrop's placement of one image's crops: centres Beta(alpha, alpha) across `box`.
struct CropPlacement {
  ObjectBox box;
  double alpha = 0.6;
};

// The boxes of a training set, and the epochs they serve: a loader keeps one of these.
struct ObjectBoxes {
  double alpha = 0.6;  // --ccrop_alpha
  // Epochs before this one crop as RandomResizedCrop does (uniform centres): the official script
  // switches ContrastiveCrop on only after --warmup_epochs and the first --loc_interval.
  int64_t first_epoch = 0;
  // The boxes are known for the epochs before this one only (they are renewed after the epoch
  // before it): the loaders prepare no batch of this epoch or later, not even ahead, until they
  // are given the next boxes.
  int64_t until_epoch = std::numeric_limits<int64_t>::max();
  std::vector<ObjectBox> boxes;  // per dataset index

  // How crops of dataset image `index` are placed in `epoch`: nullopt for RandomResizedCrop.
  std::optional<CropPlacement> placement(int64_t epoch, int64_t index) const;
};

// The boxes as a [N, 4] f32 CPU tensor, a row (top, left, bottom, right) per image, as the
// checkpoint stores them and the ranks gather them; and back (which checks the shape).
Tensor boxes_to_tensor(const std::vector<ObjectBox>& boxes);
std::vector<ObjectBox> boxes_from_tensor(const Tensor& table);

// The box of one attention map, as the official update_box computes it: the map (gh x gw, the CLS
// token's attention to each patch summed over heads) is scaled to [0, 1] (min-max, + 1e-5 in the
// divisor), resized bilinearly (align_corners = false) to image_size x image_size, and the box
// spans the rows and the columns whose largest value exceeds `threshold` (first / image_size to
// last / image_size). A map with no value above the threshold gives the whole image.
ObjectBox box_from_attention(const float* map, int gh, int gw, int image_size, double threshold);

// A sample of Beta(alpha, alpha) from the random words `bits(k)`, k = 0, 1, 2, ... (a counter-based
// stream: the same words give the same sample on any thread). X / (X + Y) for X, Y ~
// Gamma(alpha) by Marsaglia and Tsang's method (alpha < 1 boosted by U^(1/alpha), which underflows
// for alpha below about 0.023: alpha must be at least 0.05).
double beta_symmetric(double alpha, const std::function<uint32_t(uint32_t)>& bits);

}  // namespace bam::data
