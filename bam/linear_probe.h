// The linear probe (DINO's eval_linear protocol on frozen features): an optional BatchNorm
// without affine parameters, then one Linear layer, trained with SGD (momentum 0.9, no weight
// decay, lr scaled by batch/256, cosine to 0 over the epochs); top-1/top-5 on the validation set.
#pragma once

#include <functional>

#include "bam/features.h"
#include "bam/knn.h"

namespace bam {

struct LinearProbeOptions {
  int64_t epochs = 100;
  double lr = 0.001;  // for a batch of 256
  int64_t batch_size = 128;
  bool bn_head = false;
  uint64_t seed = 0;
  bool verbose = true;
};

// train/val: features and labels. `augmented_epoch`, when given, returns fresh training features
// for an epoch (the RandomResizedCrop + flip protocol); otherwise `train` is reused every epoch.
KnnResult train_linear_probe(const FeatureSet& train, const FeatureSet& val, const LinearProbeOptions& options,
                             const std::function<FeatureSet(int64_t epoch)>& augmented_epoch = {});

}  // namespace bam
