// kNN voting in chunks of test rows so the similarity matrix stays small.
#include "bam/knn.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
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
  return {100.0 * correct1 / n_test, 100.0 * correct5 / n_test};
}

}  // namespace bam
