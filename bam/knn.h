// Weighted k-nearest-neighbour classification of frozen features (DINO's protocol): cosine
// similarity to every training feature, the k most similar vote with weight exp(sim / T).
#pragma once

#include "engine/tensor.h"

namespace bam {

struct KnnResult {
  double top1 = 0;  // percent
  double top5 = 0;
};

// train_features [N, D], train_labels [N] (i64), test_features [M, D], test_labels [M].
KnnResult knn_classify(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                       const Tensor& test_labels, int64_t num_classes, int64_t k = 20, double temperature = 0.07);

}  // namespace bam
