// Linear probe training on features held in memory.
#include "bam/linear_probe.h"

#include <cmath>
#include <cstdio>

#include "bam/schedules.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/layers.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/random.h"

namespace bam {
namespace {

// Top-1/top-5 of logits against labels, in percent.
KnnResult accuracy(const Tensor& logits, const std::vector<int64_t>& labels) {
  const int64_t k = std::min<int64_t>(5, logits.size(1));
  std::vector<int64_t> top = topk(logits, k, 1).second.to_vector<int64_t>();
  int64_t c1 = 0, c5 = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    c1 += top[i * k] == labels[i];
    for (int64_t j = 0; j < k; ++j) c5 += top[i * k + j] == labels[i];
  }
  return {100.0 * c1 / labels.size(), 100.0 * c5 / labels.size()};
}

}  // namespace

KnnResult train_linear_probe(const FeatureSet& train, const FeatureSet& val, const LinearProbeOptions& o,
                             const std::function<FeatureSet(int64_t epoch)>& augmented_epoch) {
  const int64_t F = train.features.size(1), C = train.num_classes;
  BAM_CHECK(C >= 2, "linear probe: need at least two classes, got {}", C);
  BAM_CHECK(val.features.size(1) == F, "linear probe: train features have {} dims but val features {}", F,
            val.features.size(1));
  const Device device = o.device;  // the features, the classifier and its optimizer live there
  Generator gen(o.seed);
  // DINO's LinearClassifier: weight ~ N(0, 0.01), bias 0.
  Tensor weight = mul(randn({C, F}, {}, &gen), 0.01).to(device).requires_grad_(true);
  Tensor bias = zeros({C}, {DType::f32, device}).requires_grad_(true);
  BatchNorm1d bn(F, false, 0.1, 1e-6);
  bn.to(device);
  SGD optimizer({ParamGroup{{{"weight", weight}, {"bias", bias}}, false}}, 0.9);
  optimizer.set_weight_decay(0);
  const double lr = o.lr * static_cast<double>(o.batch_size) / 256.0;
  Tensor features = train.features.to(device), labels = train.labels.to(device);
  const int64_t n = features.size(0);
  const int64_t steps = std::max<int64_t>(1, n / o.batch_size);
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    if (augmented_epoch && epoch > 0) {
      features = Tensor();  // the last epoch's features go before the next epoch's arrive
      FeatureSet fresh = augmented_epoch(epoch);
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
    bn.train(true);
    for (int64_t s = 0; s < steps; ++s) {
      Tensor index = order.narrow(0, s * o.batch_size, std::min(o.batch_size, n - s * o.batch_size));
      Tensor x = index_select(features, 0, index);
      Tensor y = index_select(labels, 0, index);
      if (o.bn_head) x = bn.forward(x);
      Tensor loss = cross_entropy(linear(x, weight, bias), y);
      loss_sum.add_(loss.detach());
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    if (o.verbose && (epoch + 1) % std::max<int64_t>(1, o.epochs / 5) == 0)
      std::printf("  linear probe epoch %lld/%lld: loss %.4f\n", static_cast<long long>(epoch + 1),
                  static_cast<long long>(o.epochs), loss_sum.item() / static_cast<double>(steps));
  }
  NoGradGuard no_grad;
  bn.train(false);
  const Tensor val_features = val.features.to(device);
  Tensor x = o.bn_head ? bn.forward(val_features) : val_features;
  return accuracy(linear(x, weight, bias), val.labels.to_vector<int64_t>());
}

int64_t linear_probe_device_bytes(int64_t train_rows, int64_t test_rows, int64_t width, int64_t classes) {
  const int64_t f32 = static_cast<int64_t>(sizeof(float)), i64 = static_cast<int64_t>(sizeof(int64_t));
  // The training and validation features with their labels (an augmented epoch's replace the
  // last's, which go first), and the validation logits with their top-5.
  return (train_rows + test_rows) * (width * f32 + i64) + test_rows * classes * f32 * 2;
}

}  // namespace bam
