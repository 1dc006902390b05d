// Linear probe training on features held in memory; across ranks, on their gathered parts.
#include "bam/linear_probe.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "bam/schedules.h"
#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "kernels/cpu/parallel.h"

namespace bam {
namespace {

// Top-1/top-5 of logits against labels: the counts and percentages.
KnnResult accuracy(const Tensor& logits, const std::vector<int64_t>& labels) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n == 0) return knn_result_of(0, 0, 0);
  const int64_t k = std::min<int64_t>(5, logits.size(1));
  std::vector<int64_t> top = topk(logits, k, 1).second.to_vector<int64_t>();
  int64_t c1 = 0, c5 = 0;
  for (int64_t i = 0; i < n; ++i) {
    c1 += top[i * k] == labels[i];
    for (int64_t j = 0; j < k; ++j) c5 += top[i * k + j] == labels[i];
  }
  return knn_result_of(c1, c5, n);
}

// Sets the CPU kernels' threads for a scope (0: leaves them), and puts the old count back.
class ThreadsFor {
 public:
  explicit ThreadsFor(int threads) : before_(cpu::num_threads()) {
    if (threads > 0 && threads != before_) cpu::set_num_threads(threads);
  }
  ~ThreadsFor() {
    if (cpu::num_threads() != before_) cpu::set_num_threads(before_);
  }
  ThreadsFor(const ThreadsFor&) = delete;
  ThreadsFor& operator=(const ThreadsFor&) = delete;

 private:
  int before_;
};

}  // namespace

KnnResult train_linear_probe(FeatureSet train, const FeatureSet& val, const LinearProbeOptions& o,
                             const std::function<FeatureSet(int64_t epoch)>& augmented_epoch, LinearProbeBest* best) {
  const int64_t F = train.features.size(1), C = train.num_classes;
  BAM_CHECK(C >= 2, "linear probe: need at least two classes, got {}", C);
  BAM_CHECK(val.features.size(1) == F, "linear probe: train features have {} dims but val features {}", F,
            val.features.size(1));
  BAM_CHECK(train.features.size(0) > 0, "linear probe: no training features");
  std::optional<ThreadsFor> threads(std::in_place, o.threads);
  const Device device = o.device;  // the features, the classifier and its optimizer live there
  Generator gen(o.seed);
  // DINO's LinearClassifier: weight ~ N(0, 0.01), bias 0; with --bn_head a BatchNorm without affine
  // parameters before it (the op, not BatchNorm1d: the probe is one process's, whatever the run).
  Tensor weight = mul(randn({C, F}, {}, &gen), 0.01).to(device).requires_grad_(true);
  Tensor bias = zeros({C}, {DType::f32, device}).requires_grad_(true);
  Tensor running_mean = zeros({F}, {DType::f32, device}), running_var = ones({F}, {DType::f32, device});
  auto head = [&](const Tensor& x, bool training) {
    const Tensor normalised =
        o.bn_head ? batch_norm(x, Tensor(), Tensor(), running_mean, running_var, training, 0.1, 1e-6) : x;
    return linear(normalised, weight, bias);
  };
  SGD optimizer({ParamGroup{{{"weight", weight}, {"bias", bias}}, false}}, 0.9);
  optimizer.set_weight_decay(0);
  const double lr = o.lr * static_cast<double>(o.batch_size) / 256.0;
  const int64_t n = train.features.size(0);
  // `train`'s features serve every epoch, or with augmented epochs the first, each later epoch
  // bringing its own.
  Tensor features = train.features.to(device), labels = train.labels.to(device);
  train = FeatureSet();  // a set moved in goes once it is on the device
  const int64_t steps = linear_probe_steps(n, o.batch_size, o.bn_head);
  // The validation set, on the device from the start when validated between epochs.
  const std::vector<int64_t> val_labels = val.labels.to_vector<int64_t>();
  Tensor val_features = o.val_freq > 0 ? val.features.to(device) : Tensor();
  const auto validate = [&] {
    NoGradGuard no_grad;
    if (!val_features.defined()) val_features = val.features.to(device);
    return accuracy(head(val_features, false), val_labels);
  };
  LinearProbeBest seen;
  KnnResult last{-1, -1};
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    if (augmented_epoch && epoch > 0) {
      features = Tensor();  // the last epoch's features go before the next epoch's arrive
      threads.reset();      // the features are made with the threads the caller set
      FeatureSet fresh = augmented_epoch(epoch);
      threads.emplace(o.threads);
      BAM_CHECK(fresh.features.size(0) == n && fresh.features.size(1) == F,
                "linear probe: epoch {}'s features are {}, epoch 0's were [{}, {}]", epoch, fresh.features.describe(),
                n, F);
      features = fresh.features.to(device);
      labels = fresh.labels.to(device);
    }
    // Cosine annealing per epoch, as torch's CosineAnnealingLR(T_max=epochs, eta_min=0).
    optimizer.set_lr(lr * 0.5 * (1 + std::cos(M_PI * epoch / o.epochs)));
    Generator shuffle(o.seed * 31 + static_cast<uint64_t>(epoch) + 1);
    const Tensor order = randperm(n, &shuffle).to(device);
    Tensor loss_sum = zeros({}, {DType::f32, device});  // read once an epoch: no host wait per step
    for (int64_t s = 0; s < steps; ++s) {
      Tensor index = order.narrow(0, s * o.batch_size, std::min(o.batch_size, n - s * o.batch_size));
      Tensor loss = cross_entropy(head(index_select(features, 0, index), true), index_select(labels, 0, index));
      loss_sum.add_(loss.detach());
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    // Read every epoch (one wait): a classifier that diverged has NaN weights, and the accuracy
    // it would report is no result.
    const double mean_loss = loss_sum.item() / static_cast<double>(steps);
    BAM_CHECK(std::isfinite(mean_loss),
              "linear probe: non-finite loss ({}) in epoch {} of {}: the classifier diverged; lower --lr (it is {} "
              "for a batch of 256, {} for this batch of {})",
              mean_loss, epoch + 1, o.epochs, o.lr, lr, o.batch_size);
    if (o.verbose && (epoch + 1) % std::max<int64_t>(1, o.epochs / 5) == 0)
      std::printf("  linear probe epoch %lld/%lld: loss %.4f\n", static_cast<long long>(epoch + 1),
                  static_cast<long long>(o.epochs), mean_loss);
    const bool final_epoch = epoch + 1 == o.epochs;
    if (final_epoch || (o.val_freq > 0 && epoch % o.val_freq == 0)) {
      const KnnResult r = validate();  // in eval mode: BatchNorm's running statistics, not updated
      ++seen.validations;
      if (seen.validations == 1 || r.top1 > seen.result.top1) {  // the first of equal ones, as max() keeps
        seen.result = r;
        seen.epoch = epoch + 1;
      }
      if (final_epoch) last = r;
    }
  }
  if (best) *best = seen;
  return last;
}

KnnResult train_linear_probe_across_ranks(FeatureSet train_part, FeatureSet val_part, const LinearProbeOptions& o,
                                          Communicator& group,
                                          const std::function<FeatureSet(int64_t epoch)>& augmented_part_epoch,
                                          LinearProbeBest* best) {
  // What any rank can find wrong with its parts, shared first: all fail together, none waits.
  std::string problem;
  const Tensor &tf = train_part.features, &vf = val_part.features;
  if (tf.dim() != 2 || vf.dim() != 2 || tf.size(1) != vf.size(1))
    problem =
        fmt::format("linear probe: train features {} and val features {} do not match", tf.describe(), vf.describe());
  else if (train_part.labels.numel() != tf.size(0) || val_part.labels.numel() != vf.size(0))
    problem = fmt::format("linear probe: {} and {} labels for {} and {} feature rows", train_part.labels.numel(),
                          val_part.labels.numel(), tf.size(0), vf.size(0));
  else if (train_part.num_classes < 2)
    problem = fmt::format("linear probe: need at least two classes, got {}", train_part.num_classes);
  fail_if_any_rank(group, problem, "linear probe: another rank's features or labels do not match (see its error)");
  // The parts go to rank 0 alone, through the host: it trains; the others need not hold the sets.
  auto to_rank0 = [&](const FeatureSet& part, std::vector<int64_t>* rows_per_rank) {
    FeatureSet set;
    set.features = gather_varying_rows_to_rank0(part.features.to(DType::f32).to(Device::cpu()), group, rows_per_rank);
    set.labels = gather_varying_rows_to_rank0(part.labels.to(Device::cpu()), group);
    set.num_classes = part.num_classes;
    return set;
  };
  std::vector<int64_t> train_rows;
  FeatureSet train = to_rank0(train_part, &train_rows), val = to_rank0(val_part, nullptr);
  train_part = FeatureSet();  // parts moved in go once gathered
  val_part = FeatureSet();
  int64_t n_train = 0;
  for (int64_t rows : train_rows) n_train += rows;
  if (n_train == 0) fail_on_every_rank(group, "linear probe: no training features on any rank");
  // top-1, top-5, and their counts; the same for the best validation, its epoch and the validations
  std::vector<double> result(12, 0.0);
  if (group.rank() == 0) {
    std::function<FeatureSet(int64_t)> augmented;
    if (augmented_part_epoch) augmented = [&](int64_t epoch) { return to_rank0(augmented_part_epoch(epoch), nullptr); };
    // An error in there (say, the GPU out of memory) leaves the others waiting in their next
    // gather: the tools' ranks watch each other (Communicator::exit_when_a_peer_stops) and stop.
    LinearProbeBest b;
    const KnnResult r = train_linear_probe(std::move(train), val, o, augmented, &b);
    result = {r.top1,
              r.top5,
              static_cast<double>(r.correct1),
              static_cast<double>(r.correct5),
              static_cast<double>(r.count),
              b.result.top1,
              b.result.top5,
              static_cast<double>(b.result.correct1),
              static_cast<double>(b.result.correct5),
              static_cast<double>(b.result.count),
              static_cast<double>(b.epoch),
              static_cast<double>(b.validations)};
  } else if (augmented_part_epoch) {
    // The other ranks feed rank 0 their part of every augmented epoch, as its probe asks for them.
    for (int64_t epoch = 1; epoch < o.epochs; ++epoch) to_rank0(augmented_part_epoch(epoch), nullptr);
  }
  Tensor shared = from_vector(result, {12});
  group.broadcast(shared);
  const double* r = shared.data<double>();
  const auto result_at = [&](int at) {
    KnnResult out = knn_result_of(static_cast<int64_t>(r[at + 2]), static_cast<int64_t>(r[at + 3]),
                                  static_cast<int64_t>(r[at + 4]));
    out.top1 = r[at];
    out.top5 = r[at + 1];
    return out;
  };
  if (best) {
    best->result = result_at(5);
    best->epoch = static_cast<int64_t>(r[10]);
    best->validations = static_cast<int64_t>(r[11]);
  }
  return result_at(0);
}

int64_t linear_probe_steps(int64_t rows, int64_t batch, bool bn_head) {
  const int64_t steps = (rows + batch - 1) / batch;
  return bn_head && steps > 1 && rows % batch == 1 ? steps - 1 : steps;
}

int64_t linear_probe_device_bytes(int64_t train_rows, int64_t test_rows, int64_t width, int64_t classes,
                                  int64_t batch) {
  auto block = [](int64_t bytes) { return static_cast<int64_t>(cuda::allocation_size(static_cast<size_t>(bytes))); };
  const int64_t f32 = 4, i64 = 8, top = std::min<int64_t>(5, classes);
  batch = std::min(batch, train_rows);
  return block(train_rows * width * f32) + 3 * block(train_rows * i64)            // features, labels (twice), order
         + 3 * block(batch * width * f32) + 3 * block(batch * classes * f32)      // a batch: rows, normalised, grads
         + 4 * block(classes * width * f32) + 4 * block(classes * f32)            // weight, bias: grads, momentum
         + 2 * block(test_rows * width * f32) + block(test_rows * classes * f32)  // validation
         + block(test_rows * top * (f32 + i64)) + 16 * block(width * f32);        // top-5; BatchNorm statistics
}

}  // namespace bam
