// The evaluations of frozen features on a GPU: the kNN vote and the linear probe with their
// features on the device against the same on the host (their CPU twins), and the GPU-or-host
// choice that bamprobe and bamtrain's kNN monitor make (bam/evaluation_device.h).
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "bam/evaluation_device.h"
#include "bam/knn.h"
#include "bam/linear_probe.h"
#include "engine/cuda.h"
#include "engine/random.h"
#include "tests/support.h"

namespace bam::test {
namespace {

Device gpu() { return Device::cuda(cuda::selected_device()); }

// n labelled points around the classes' centres (label i % classes), with noise that makes the
// classifiers get some of them wrong.
FeatureSet clustered(int64_t n, const Tensor& centres, double noise, Generator* g) {
  const int64_t classes = centres.size(0);
  std::vector<int64_t> l;
  for (int64_t i = 0; i < n; ++i) l.push_back((i * 7) % classes);
  FeatureSet set;
  set.labels = from_vector(l, {n});
  set.features = add(index_select(centres, 0, set.labels), mul(randn({n, centres.size(1)}, {}, g), noise));
  set.num_classes = classes;
  return set;
}

}  // namespace

TEST_CASE("kNN with its training features on the GPU votes as on the host") {
  // 300 test rows: two blocks of similarities (256 rows each). 10 classes, for top-5.
  Generator g(test_seed("knn on the gpu"));
  const Tensor centres = randn({10, 16}, {}, &g);
  const FeatureSet train = clustered(400, centres, 1.6, &g), test = clustered(300, centres, 1.6, &g);
  const KnnResult host = knn_classify(train.features, train.labels, test.features, test.labels, 10, 20, 0.07);
  REQUIRE(host.correct1 > 0);
  REQUIRE(host.correct1 < host.count);
  REQUIRE(host.correct5 > host.correct1);
  // The test rows on the host (moved to the GPU by the vote) or already there; labels either way.
  const KnnResult on_gpu =
      knn_classify(train.features.to(gpu()), train.labels, test.features, test.labels, 10, 20, 0.07);
  const KnnResult all_on_gpu = knn_classify(train.features.to(gpu()), train.labels.to(gpu()), test.features.to(gpu()),
                                            test.labels.to(gpu()), 10, 20, 0.07);
  // cuBLASLt may sum the similarities in another order than the host's GEMM (split K): a row whose
  // 20th and 21st neighbours, or two classes' votes, tie within a float ulp may vote otherwise.
  // One such row at most (the emulator's GEMM gives the host's counts exactly).
  for (const KnnResult& r : {on_gpu, all_on_gpu}) {
    CHECK(r.count == host.count);
    CHECK(std::abs(r.correct1 - host.correct1) <= 1);
    CHECK(std::abs(r.correct5 - host.correct5) <= 1);
  }
}

TEST_CASE("the linear probe trains on the GPU as on the host, with and without augmented epochs") {
  Generator g(test_seed("linear probe on the gpu"));
  const Tensor centres = randn({6, 24}, {}, &g);
  const FeatureSet train = clustered(240, centres, 1.4, &g);
  FeatureSet val = clustered(150, centres, 1.4, &g);
  // Three validation rows labelled as the next class: the probe cannot get every row right, however
  // far apart a draw puts the centres (about 1 draw in 600 separated them all).
  std::vector<int64_t> labels = val.labels.to_vector<int64_t>();
  for (size_t i = 0; i < 3; ++i) labels[i] = (labels[i] + 1) % 6;
  val.labels = from_vector(labels, {150});
  // Fresh noise for every epoch of the augmented protocol, the same on both devices, and the rows in
  // another order (as a loader's would be): features and labels must be taken together.
  std::vector<FeatureSet> epochs;
  for (int e = 0; e < 6; ++e) {
    FeatureSet fresh = clustered(240, centres, 1.4, &g);
    const Tensor order = randperm(240, &g);
    fresh.features = index_select(fresh.features, 0, order);
    fresh.labels = index_select(fresh.labels, 0, order);
    epochs.push_back(fresh);
  }
  for (bool bn_head : {false, true}) {
    for (bool augmented : {false, true}) {
      CAPTURE(bn_head);
      CAPTURE(augmented);
      LinearProbeOptions o;
      o.epochs = 6;
      o.lr = 0.2;
      o.batch_size = 32;
      o.bn_head = bn_head;
      o.verbose = false;
      std::vector<int64_t> asked;
      std::function<FeatureSet(int64_t)> next;
      if (augmented)
        next = [&](int64_t epoch) {
          asked.push_back(epoch);
          return epochs[static_cast<size_t>(epoch)];
        };
      const FeatureSet& first = augmented ? epochs[0] : train;
      const KnnResult host = train_linear_probe(first, val, o, next);
      o.device = gpu();
      const KnnResult on_gpu = train_linear_probe(first, val, o, next);
      REQUIRE(host.top1 > 30);  // better than chance (1 in 6), and not all right
      REQUIRE(host.top1 < 100);
      // The same training up to rounding: at most one validation row of 150 may fall differently.
      CHECK(std::abs(on_gpu.top1 - host.top1) <= 100.0 / 150 + 1e-9);
      CHECK(std::abs(on_gpu.top5 - host.top5) <= 100.0 / 150 + 1e-9);
      if (augmented) CHECK(asked == std::vector<int64_t>{1, 2, 3, 4, 5, 1, 2, 3, 4, 5});
    }
  }
}

TEST_CASE("the memory the evaluations say they take on the GPU bounds what they take") {
  // evaluation_device decides by these estimates: one that is low would let a vote or a probe
  // run out of device memory. 300 test rows: two blocks of similarities. Each from an empty
  // cache, so that no block is reused at a larger size than asked.
  Generator g(test_seed("evaluation memory"));
  const Tensor centres = randn({10, 32}, {}, &g);
  const FeatureSet train = clustered(2000, centres, 1.5, &g), test = clustered(300, centres, 1.5, &g);
  const int dev = cuda::selected_device();
  auto start = [&] {
    cuda::synchronize();
    cuda::empty_cache();
    cuda::reset_peak_memory(dev);
    return cuda::memory_stats(dev).bytes_in_use;
  };
  size_t before = start();
  {
    const Tensor bank = train.features.to(gpu());
    knn_classify(bank, train.labels, test.features, test.labels, 10, 20, 0.07);
  }
  const size_t knn_peak = cuda::memory_stats(dev).peak_bytes_in_use - before;
  const size_t knn_estimate = static_cast<size_t>(knn_device_bytes(2000, 300, 32, 20));
  CHECK(knn_peak <= knn_estimate);
  CHECK(knn_peak >= knn_estimate * 3 / 4);  // and not far above it
  for (bool bn_head : {false, true}) {
    CAPTURE(bn_head);
    LinearProbeOptions o;
    o.epochs = 2;
    o.batch_size = 64;
    o.bn_head = bn_head;
    o.verbose = false;
    o.device = gpu();
    before = start();
    train_linear_probe(train, test, o, [&](int64_t) { return clustered(2000, centres, 1.5, &g); });
    const size_t probe_peak = cuda::memory_stats(dev).peak_bytes_in_use - before;
    const size_t probe_estimate = static_cast<size_t>(linear_probe_device_bytes(2000, 300, 32, 10, 64));
    CHECK(probe_peak <= probe_estimate);
    CHECK(probe_peak >= probe_estimate / 2);
    MESSAGE("kNN " << knn_peak << " of " << knn_estimate << " bytes; probe " << probe_peak << " of " << probe_estimate);
  }
}

TEST_CASE("evaluations run on the GPU when their memory fits in four fifths of what it has") {
  const size_t before = cuda::memory_available();
  REQUIRE(before > 0);
  const EvaluationDevice small = evaluation_device(gpu(), int64_t{1} << 20);
  CHECK(small.device == gpu());
  CHECK(small.note == gpu().str());
  const int64_t too_much = static_cast<int64_t>(static_cast<double>(before) * 0.81);
  const EvaluationDevice large = evaluation_device(gpu(), too_much);
  CHECK(large.device.is_cpu());
  CHECK_MESSAGE(large.note.find("more than 80 % of the") != std::string::npos, large.note);
  CHECK(evaluation_device(gpu(), static_cast<int64_t>(static_cast<double>(before) * 0.79)).device == gpu());
  CHECK(evaluation_device(Device::cpu(), 1).device.is_cpu());
  CHECK(evaluation_device(Device::cpu(), 1).note.empty());
  // Ranks that share the GPU each take their part of it: what fits one process does not fit
  // each of two.
  const int64_t half = static_cast<int64_t>(static_cast<double>(before) * 0.5);
  CHECK(evaluation_device(gpu(), half).device == gpu());
  set_ranks_sharing_gpu(2);
  const EvaluationDevice shared = evaluation_device(gpu(), half);
  set_ranks_sharing_gpu(1);
  CHECK(shared.device.is_cpu());
  CHECK_MESSAGE(shared.note.find("to each of the 2 ranks sharing it") != std::string::npos, shared.note);
  CHECK(evaluation_device(gpu(), half).device == gpu());
  // A tensor takes memory; once freed, its block stays in the allocator's cache and counts as
  // available again (2 MiB of slack for a real device's page rounding and other processes).
  const size_t bytes = size_t{64} << 20, slack = size_t{2} << 20;
  size_t during = 0;
  {
    const Tensor t = empty({static_cast<int64_t>(bytes / 4)}, {DType::f32, gpu()});
    during = cuda::memory_available();
    CHECK(during + bytes <= before + slack);
  }
  CHECK(cuda::memory_available() + slack >= during + bytes);
}

}  // namespace bam::test
