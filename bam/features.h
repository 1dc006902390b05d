// Frozen-backbone features for evaluation (kNN monitor, bamprobe): every image of a labelled
// dataset through the evaluation transform, then the backbone (or raw pixels), in batches.
#pragma once

#include "data/augment.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "models/vit.h"

namespace bam {

struct FeatureOptions {
  int64_t img_size = 224;
  int64_t n_last_blocks = 1;        // CLS tokens of the last n blocks, concatenated
  bool avgpool_patchtokens = false; // also the mean of the last block's patch tokens
  int64_t batch_size = 128;
  int threads = 4;
  data::AugmentRecipe recipe;       // normalisation and eval_resize_ratio
  // When set: the probe's training transform (RandomResizedCrop + flip, keyed by seed/epoch)
  // instead of the evaluation transform.
  bool augment = false;
  uint64_t seed = 0;
  int64_t epoch = 0;
  data::DataBackend backend = data::DataBackend::cpu;  // gpu: decoded and cropped on the GPU
};

struct FeatureSet {
  Tensor features;  // [N, F] f32
  Tensor labels;    // [N] i64
  int64_t num_classes = 0;
};

// backbone == nullptr gives the normalised pixels themselves (the raw-pixel baseline).
FeatureSet extract_features(const VisionTransformer* backbone, const data::Dataset& dataset,
                            const FeatureOptions& options);

}  // namespace bam
