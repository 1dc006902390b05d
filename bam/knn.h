// Weighted k-nearest-neighbour classification of frozen features (DINO's protocol): cosine
// similarity to every training feature, the k most similar vote with weight exp(sim / T).
#pragma once

#include "engine/communicator.h"
#include "engine/tensor.h"

namespace bam {

struct KnnResult {
  double top1 = 0;  // percent
  double top5 = 0;
  // What the percentages come from: test rows whose class is the vote's first, among its first
  // five, and the rows classified (several ranks add theirs up).
  int64_t correct1 = 0, correct5 = 0, count = 0;
};

// knn_classify over the ranks of a data-parallel run, each holding a contiguous part of the
// training and of the test rows (in rank order, the whole sets; a part may be empty). The training
// features stay where they are: the test rows are gathered, each rank finds every test row's k
// nearest among its own training rows, and the ranks' candidates are merged in topk's order
// (similarity descending, then the lower row). Every rank gets what knn_classify of the whole
// sets gives, ties among neighbours included.
KnnResult knn_classify_across_ranks(const Tensor& train_features, const Tensor& train_labels,
                                    const Tensor& test_features, const Tensor& test_labels, int64_t num_classes,
                                    Communicator& group, int64_t k = 20, double temperature = 0.07);

// The device memory knn_classify (or, for one rank's training rows and all the test rows,
// knn_classify_across_ranks) takes at its peak when its features are on a GPU: the features (f32)
// and their normalised copies, one block of similarities and its k nearest, as the caching
// allocator rounds them (cuda::allocation_size).
int64_t knn_device_bytes(int64_t train_rows, int64_t test_rows, int64_t width, int64_t k);

// The percentages of counts (0 for no rows).
KnnResult knn_result_of(int64_t correct1, int64_t correct5, int64_t count);

// train_features [N, D], train_labels [N] (i64), test_features [M, D], test_labels [M]. The
// similarities are computed where the training features are (the host or a GPU: see
// knn_device_bytes); the test features are moved there.
KnnResult knn_classify(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                       const Tensor& test_labels, int64_t num_classes, int64_t k = 20, double temperature = 0.07);

}  // namespace bam
