// The linear probe (DINO's eval_linear protocol on frozen features): an optional BatchNorm
// without affine parameters, then one Linear layer, trained with SGD (momentum 0.9, no weight
// decay, lr scaled by batch/256, cosine to 0 over the epochs); top-1/top-5 on the validation set
// after the last epoch, and (DINO's reported figure) the best of the validations every val_freq
// epochs.
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
  // Where the classifier trains: the features (given on the host) are moved there, and each
  // augmented epoch's replace the last's. See linear_probe_device_bytes for a GPU.
  Device device = Device::cpu();
  // CPU threads for the probe's own steps (0: as they are); each augmented epoch's features are
  // made with the caller's. A data-parallel bamprobe's rank 0 trains alone while the ranks that
  // share its cores wait: it takes their threads too (not with augmented epochs, whose features
  // they make meanwhile).
  int threads = 0;
  // Validate after epochs 1, 1 + val_freq, 1 + 2 val_freq ... and the last, as DINO's eval_linear
  // (its epoch % val_freq == 0, from 0), keeping the best top-1; 0: after the last epoch only.
  int64_t val_freq = 0;
};

// The best top-1 of a probe's validations, DINO's reported figure (it selects on the validation
// set), the epoch (from 1) it came after, and how many validations there were.
struct LinearProbeBest {
  KnnResult result{-1, -1};
  int64_t epoch = 0, validations = 0;
};

// train/val: features and labels. `augmented_epoch`, when given, returns fresh training features
// for epochs 1 .. epochs-1 (the RandomResizedCrop + flip protocol), `train` being epoch 0's;
// otherwise `train` is reused every epoch.
// Every training row is seen once an epoch (linear_probe_steps). A caller that moves `train` in
// lets the probe free the host's copy once it is on options.device.
// Returns the result after the last epoch; `best`, when given, gets the best of the validations.
// A non-finite training loss (the classifier diverged) is an error naming the epoch and the lr.
KnnResult train_linear_probe(FeatureSet train, const FeatureSet& val, const LinearProbeOptions& options,
                             const std::function<FeatureSet(int64_t epoch)>& augmented_epoch = {},
                             LinearProbeBest* best = nullptr);

// train_linear_probe over the ranks of a data-parallel run, each holding a contiguous part of the
// training and of the validation rows (in rank order, the whole sets; a part may be empty). The
// parts are gathered on rank 0 alone (through the host), which trains the probe on the whole sets
// on its options.device, while the other ranks feed it each later augmented epoch's part
// (augmented_part_epoch, called for epochs 1 .. epochs-1 on every rank, in order; train_part is
// epoch 0's). Every rank gets
// rank 0's result: what train_linear_probe of the whole sets gives with these options, whose
// batch_size is the whole batch. Parts moved in go once gathered. A collective call.
KnnResult train_linear_probe_across_ranks(FeatureSet train_part, FeatureSet val_part, const LinearProbeOptions& options,
                                          Communicator& group,
                                          const std::function<FeatureSet(int64_t epoch)>& augmented_part_epoch = {},
                                          LinearProbeBest* best = nullptr);

// The probe's steps an epoch over `rows` rows: the last batch partial, as DINO's loader keeps it,
// but for a last batch of one row under the BatchNorm head, whose batch variance needs two.
int64_t linear_probe_steps(int64_t rows, int64_t batch, bool bn_head);

// The device memory train_linear_probe takes at its peak on a GPU, as the caching allocator rounds
// it (cuda::allocation_size): the training features with their labels (twice while an augmented
// epoch's replace them) and order, a batch's activations and gradients, the classifier with its
// gradient and momentum, and at the end the validation features, their normalised copy, logits
// and top-5.
int64_t linear_probe_device_bytes(int64_t train_rows, int64_t test_rows, int64_t width, int64_t classes, int64_t batch);

}  // namespace bam
