// kNN voting in chunks of test rows so the similarity matrix stays small; across ranks, each
// rank's nearest neighbours merged.
#include "bam/knn.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {

namespace {

constexpr int64_t kChunk = 256;  // test rows per similarity block

// One test row's vote: its k neighbours (similarity, training row) in topk's order vote for their
// class with weight exp(similarity / T). Adds the row to the counts when its class comes first, or
// among the first min(5, k) (ties between vote totals: the lower class first, as a stable sort).
// A class no neighbour voted for is never among them, wherever its number puts it.
void vote(const float* similarity, const int64_t* neighbour, int64_t k, const std::vector<int64_t>& train_labels,
          int64_t label, int64_t num_classes, double temperature, int64_t* correct1, int64_t* correct5) {
  std::vector<double> votes(static_cast<size_t>(num_classes), 0.0);
  std::vector<char> voted(static_cast<size_t>(num_classes), 0);
  // exp((s - s_nearest) / T): every weight of the row divided by the same exp(s_nearest / T), which
  // leaves the ranking as it is, and a small T cannot overflow the weights to inf, where every
  // class would tie.
  const double nearest = similarity[0];
  for (int64_t j = 0; j < k; ++j) {
    votes[train_labels[neighbour[j]]] += std::exp((similarity[j] - nearest) / temperature);
    voted[train_labels[neighbour[j]]] = 1;
  }
  if (!voted[label] || std::isnan(votes[label])) return;
  int64_t better = 0;
  for (int64_t c = 0; c < num_classes; ++c)
    if (voted[c] && (votes[c] > votes[label] || (votes[c] == votes[label] && c < label))) ++better;
  *correct1 += better == 0;
  *correct5 += better < std::min<int64_t>(5, k);
}

// What is wrong with the four inputs' shapes, or "".
std::string shape_problem(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                          const Tensor& test_labels) {
  if (train_features.dim() != 2 || test_features.dim() != 2 || train_features.size(1) != test_features.size(1))
    return fmt::format("knn: feature shapes {} and {} do not match", train_features.describe(),
                       test_features.describe());
  if (train_labels.numel() != train_features.size(0) || test_labels.numel() != test_features.size(0))
    return fmt::format("knn: {} and {} labels for {} and {} feature rows", train_labels.numel(), test_labels.numel(),
                       train_features.size(0), test_features.size(0));
  return "";
}

void check_labels(const std::vector<int64_t>& labels, int64_t num_classes) {
  for (int64_t l : labels) BAM_CHECK(l >= 0 && l < num_classes, "knn: label {} outside [0, {})", l, num_classes);
}

// For each row of `test`, its k most similar rows of `train` (both l2-normalised, k <= train
// rows), in topk's order (similarity descending, then the lower row): fn(test row, similarities,
// train rows), k of each. In blocks of kChunk test rows, so the similarity matrix stays small.
template <typename Fn>
void for_each_nearest(const Tensor& test, const Tensor& train, int64_t k, Fn fn) {
  for (int64_t start = 0; start < test.size(0); start += kChunk) {
    const int64_t rows = std::min(kChunk, test.size(0) - start);
    auto [values, index] = topk(matmul(test.narrow(0, start, rows), train.t()), k, 1);
    const std::vector<float> v = values.to_vector<float>();
    const std::vector<int64_t> idx = index.to_vector<int64_t>();
    for (int64_t r = 0; r < rows; ++r) fn(start + r, &v[r * k], &idx[r * k]);
  }
}

}  // namespace

KnnResult knn_classify(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                       const Tensor& test_labels, int64_t num_classes, int64_t k, double temperature) {
  NoGradGuard no_grad;
  if (std::string problem = shape_problem(train_features, train_labels, test_features, test_labels); !problem.empty())
    fail("{}", problem);
  const int64_t n_train = train_features.size(0), n_test = test_features.size(0);
  BAM_CHECK(n_train > 0, "knn: no training features to vote");
  if (n_test == 0) return knn_result_of(0, 0, 0);
  k = std::min(k, n_train);
  const std::vector<int64_t> labels = train_labels.to_vector<int64_t>(), truth = test_labels.to_vector<int64_t>();
  check_labels(labels, num_classes);
  check_labels(truth, num_classes);
  int64_t correct1 = 0, correct5 = 0;
  const Device device = train_features.device();  // where the similarities are computed
  for_each_nearest(l2_normalize(test_features.to(DType::f32).to(device), 1),
                   l2_normalize(train_features.to(DType::f32), 1), k,
                   [&](int64_t t, const float* similarity, const int64_t* neighbour) {
                     vote(similarity, neighbour, k, labels, truth[t], num_classes, temperature, &correct1, &correct5);
                   });
  return knn_result_of(correct1, correct5, n_test);
}

KnnResult knn_classify_across_ranks(const Tensor& train_features, const Tensor& train_labels,
                                    const Tensor& test_features, const Tensor& test_labels, int64_t num_classes,
                                    Communicator& group, int64_t k, double temperature) {
  NoGradGuard no_grad;
  // A rank whose inputs are wrong must not leave the others waiting in a gather: all learn of it.
  const std::string problem = shape_problem(train_features, train_labels, test_features, test_labels);
  fail_if_any_rank(group, problem, "knn: another rank's features or labels do not match (see its error)");
  // The training rows stay where they are (a memory bank can be gigabytes, on the host or a GPU);
  // the test rows, and the labels, are what every rank needs whole. The gathers go through the host.
  const Device device = train_features.device();  // where the similarities are computed
  std::vector<int64_t> train_rows_per_rank;
  const std::vector<int64_t> labels =
      all_gather_varying_rows(train_labels.to(Device::cpu()), group, &train_rows_per_rank).to_vector<int64_t>();
  const int64_t n_train = static_cast<int64_t>(labels.size());
  BAM_CHECK(n_train > 0, "knn: no training features to vote");
  const Tensor test =
      l2_normalize(all_gather_varying_rows(test_features.to(DType::f32).to(Device::cpu()), group).to(device), 1);
  const std::vector<int64_t> truth = all_gather_varying_rows(test_labels.to(Device::cpu()), group).to_vector<int64_t>();
  check_labels(labels, num_classes);  // the same on every rank: all fail together
  check_labels(truth, num_classes);
  const int64_t n_test = test.size(0);
  if (n_test == 0) return knn_result_of(0, 0, 0);
  k = std::min(k, n_train);
  int64_t first_row = 0;  // this rank's first training row in the whole set
  for (int r = 0; r < group.rank(); ++r) first_row += train_rows_per_rank[static_cast<size_t>(r)];
  // Each rank's k nearest among its own rows, for every test row: (similarity, row in the whole
  // set) pairs, in f64 (exact for both), padded with (-inf, -1) where a rank holds fewer than k.
  const int64_t k_mine = std::min(k, train_features.size(0));
  Tensor candidates = empty({n_test, k, 2}, {DType::f64, Device::cpu()});
  double* c = candidates.data<double>();
  for (int64_t i = 0; i < n_test * k; ++i) {
    c[2 * i] = -std::numeric_limits<double>::infinity();
    c[2 * i + 1] = -1;
  }
  if (k_mine > 0)
    for_each_nearest(test, l2_normalize(train_features.to(DType::f32), 1), k_mine,
                     [&](int64_t t, const float* similarity, const int64_t* neighbour) {
                       for (int64_t j = 0; j < k_mine; ++j) {
                         c[2 * (t * k + j)] = similarity[j];
                         c[2 * (t * k + j) + 1] = static_cast<double>(first_row + neighbour[j]);
                       }
                     });
  // The whole set's k nearest are the k nearest of the ranks' candidates, in topk's order
  // (similarity descending, then the lower row): one process's neighbours, ties included. Every
  // rank merges them all (cheap next to the similarities) and gets the whole result.
  const Tensor all = group.all_gather(candidates);  // [world * n_test, k, 2]
  const double* a = all.data<double>();
  const int64_t world = group.world_size();
  int64_t correct1 = 0, correct5 = 0;
  std::vector<std::pair<double, int64_t>> pool;
  std::vector<float> similarity(static_cast<size_t>(k));
  std::vector<int64_t> neighbour(static_cast<size_t>(k));
  for (int64_t t = 0; t < n_test; ++t) {
    pool.clear();
    for (int64_t r = 0; r < world; ++r)
      for (int64_t j = 0; j < k; ++j) {
        const double* pair = a + 2 * ((r * n_test + t) * k + j);
        if (pair[1] >= 0) pool.emplace_back(pair[0], static_cast<int64_t>(pair[1]));
      }
    std::partial_sort(pool.begin(), pool.begin() + k, pool.end(), [](const auto& x, const auto& y) {
      const bool nx = std::isnan(x.first), ny = std::isnan(y.first);
      if (nx || ny) return nx && !ny ? true : (nx && ny ? x.second < y.second : false);
      return x.first != y.first ? x.first > y.first : x.second < y.second;
    });
    for (int64_t j = 0; j < k; ++j) {
      similarity[j] = static_cast<float>(pool[j].first);
      neighbour[j] = pool[j].second;
    }
    vote(similarity.data(), neighbour.data(), k, labels, truth[t], num_classes, temperature, &correct1, &correct5);
  }
  return knn_result_of(correct1, correct5, n_test);
}

int64_t knn_device_bytes(int64_t train_rows, int64_t test_rows, int64_t width, int64_t k) {
  auto block = [](int64_t bytes) { return static_cast<int64_t>(cuda::allocation_size(static_cast<size_t>(bytes))); };
  const int64_t f32 = 4, rows = std::min(kChunk, test_rows);
  return 2 * block(train_rows * width * f32) + block(train_rows * f32)  // the features, normalised, norms
         + 2 * block(test_rows * width * f32) + block(test_rows * f32)  // the test rows, likewise
         + block(rows * train_rows * f32)                               // one block of similarities
         + block(rows * k * f32) + block(rows * k * 8);                 // its k nearest
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
