// kNN voting in chunks of test rows so the similarity matrix stays small.
#include "bam/knn.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {

KnnResult knn_classify(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                       const Tensor& test_labels, int64_t num_classes, int64_t k, double temperature) {
  NoGradGuard no_grad;
  BAM_CHECK(train_features.dim() == 2 && test_features.dim() == 2 && train_features.size(1) == test_features.size(1),
            "knn: feature shapes {} and {} do not match", train_features.describe(), test_features.describe());
  BAM_CHECK(train_labels.numel() == train_features.size(0) && test_labels.numel() == test_features.size(0),
            "knn: label counts do not match the features");
  const int64_t n_train = train_features.size(0), n_test = test_features.size(0);
  BAM_CHECK(n_train > 0, "knn: no training features to vote");
  if (n_test == 0) return knn_result_of(0, 0, 0);  // a rank's empty part of a small folder
  k = std::min(k, n_train);
  Tensor train = l2_normalize(train_features.to(DType::f32), 1);
  Tensor test = l2_normalize(test_features.to(DType::f32), 1);
  std::vector<int64_t> labels = train_labels.to_vector<int64_t>();
  std::vector<int64_t> truth = test_labels.to_vector<int64_t>();
  for (int64_t l : labels) BAM_CHECK(l >= 0 && l < num_classes, "knn: label {} outside [0, {})", l, num_classes);
  int64_t correct1 = 0, correct5 = 0;
  const int64_t chunk = 256;
  for (int64_t start = 0; start < n_test; start += chunk) {
    int64_t rows = std::min(chunk, n_test - start);
    Tensor sim = matmul(test.narrow(0, start, rows), train.t());
    auto [values, index] = topk(sim, k, 1);
    std::vector<float> v = values.to_vector<float>();
    std::vector<int64_t> idx = index.to_vector<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> votes(num_classes, 0.0);
      for (int64_t j = 0; j < k; ++j) votes[labels[idx[r * k + j]]] += std::exp(v[r * k + j] / temperature);
      int64_t label = truth[start + r];
      // Rank of the true class among the vote totals (ties: lower class index first, as a stable sort).
      int64_t better = 0;
      for (int64_t c = 0; c < num_classes; ++c)
        if (votes[c] > votes[label] || (votes[c] == votes[label] && c < label)) ++better;
      correct1 += better == 0;
      correct5 += better < 5;
    }
  }
  return knn_result_of(correct1, correct5, n_test);
}

KnnResult knn_classify_across_ranks(const Tensor& train_features, const Tensor& train_labels,
                                    const Tensor& test_features, const Tensor& test_labels, int64_t num_classes,
                                    Communicator& group, int64_t k, double temperature) {
  NoGradGuard no_grad;
  // The memory bank in the whole set's order: the same top-k ties as one process.
  const Tensor bank = all_gather_varying_rows(train_features.to(DType::f32), group);
  const Tensor bank_labels = all_gather_varying_rows(train_labels, group);
  const KnnResult mine = knn_classify(bank, bank_labels, test_features, test_labels, num_classes, k, temperature);
  Tensor counts = from_vector(std::vector<double>{static_cast<double>(mine.correct1),
                                                  static_cast<double>(mine.correct5), static_cast<double>(mine.count)},
                              {3});
  group.all_reduce_sum(counts);  // exact: counts far below 2^53
  const double* c = counts.data<double>();
  return knn_result_of(std::llround(c[0]), std::llround(c[1]), std::llround(c[2]));
}

KnnResult knn_result_of(int64_t correct1, int64_t correct5, int64_t count) {
  KnnResult r;
  r.correct1 = correct1;
  r.correct5 = correct5;
  r.count = count;
  if (count > 0) {
    r.top1 = 100.0 * static_cast<double>(correct1) / static_cast<double>(count);
    r.top5 = 100.0 * static_cast<double>(correct5) / static_cast<double>(count);
  }
  return r;
}

}  // namespace bam
