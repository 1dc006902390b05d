// Data parallelism on the CPU: ranks as threads of one process, talking over loopback TCP. The
// collectives against plain loops, the differentiable ones by their gradients, and the BAM loss and
// BatchNorm across ranks against one process that holds the whole batch. (tests/cli_data_parallel.sh
// runs bamtrain as separate processes.)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "bam/bam_loss.h"
#include "bam/knn.h"
#include "bam/linear_probe.h"
#include "bam/sinkhorn.h"
#include "bam/train_config.h"
#include "data/batch_sequence.h"
#include "data/dataset.h"
#include "engine/autograd.h"
#include "engine/distributed.h"
#include "engine/random.h"
#include "engine/tcp_socket.h"
#include "tests/rank_threads.h"
#include "tests/support.h"

namespace bam::test {
namespace {

// A TCP socket bound to a port of 127.0.0.1 the kernel picks; `address` is where it is bound.
tcp::Socket bound_loopback_socket(sockaddr_in* address) {
  tcp::Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(s.fd() >= 0);
  sockaddr_in loopback{};
  loopback.sin_family = AF_INET;
  loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s.fd(), reinterpret_cast<const sockaddr*>(&loopback), sizeof(loopback)) == 0);
  socklen_t length = sizeof(*address);
  REQUIRE(::getsockname(s.fd(), reinterpret_cast<sockaddr*>(address), &length) == 0);
  return s;
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

TEST_CASE("collectives: all_gather, all_reduce_sum and broadcast match plain loops, the same bits on every rank") {
  const int world = 3;
  std::vector<Tensor> x(world), y(world);
  for (int r = 0; r < world; ++r) {
    Generator g(test_seed("collectives") + static_cast<uint64_t>(r));
    x[r] = randn({4, 5}, {}, &g);
    y[r] = randn({7}, {DType::f64}, &g);
  }
  std::vector<Tensor> gathered(world), summed(world), summed64(world), broadcast(world);
  run_ranks(world, [&](Communicator& group) {
    const int r = group.rank();
    gathered[r] = group.all_gather(x[r]);
    summed[r] = x[r].clone();
    group.all_reduce_sum(summed[r]);
    summed64[r] = y[r].clone();
    group.all_reduce_sum(summed64[r]);
    broadcast[r] = x[r].clone();
    group.broadcast(broadcast[r]);
  });
  const Tensor expected_gather = cat(x, 0);
  const Tensor expected_sum = add(add(x[0], x[1]), x[2]), expected_sum64 = add(add(y[0], y[1]), y[2]);
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(max_abs_difference(gathered[r], expected_gather) == 0);
    CHECK(max_abs_difference(summed[r], expected_sum) == 0);  // rank order: ((x0 + x1) + x2)
    CHECK(max_abs_difference(summed64[r], expected_sum64) == 0);
    CHECK(max_abs_difference(broadcast[r], x[0]) == 0);
  }
}

TEST_CASE("collectives: ranks that call different collectives, or stop, fail with a message instead of hanging") {
  const std::string different = error_of([] {
    run_ranks(2, [](Communicator& group) {
      if (group.rank() == 0) {
        group.all_gather(zeros({2, 3}));
      } else {
        Tensor t = zeros({4});
        group.all_reduce_sum(t);
      }
    });
  });
  CHECK_MESSAGE(different.find("took different paths") != std::string::npos, different);
  CHECK_MESSAGE(different.find("all_gather of 24 bytes") != std::string::npos, different);
  // A broadcast, whose payload only rank 0 sends, against a gather, which only the others send.
  const std::string broadcast = error_of([] {
    run_ranks(2, [](Communicator& group) {
      Tensor t = zeros({3});
      if (group.rank() == 0)
        group.broadcast(t);
      else
        group.all_gather(t);
    });
  });
  CHECK_MESSAGE(broadcast.find("took different paths") != std::string::npos, broadcast);
  const std::string stopped = error_of([] {
    run_ranks(2, [](Communicator& group) {
      if (group.rank() == 0) group.all_gather(zeros({2, 3}));  // rank 1 returns and disconnects
    });
  });
  CHECK_MESSAGE(stopped.find("rank 1 closed its connection") != std::string::npos, stopped);
}

// The sending side of the stall notice (cli_data_parallel.sh stops a whole bamtrain rank, whose
// peer waits to receive): rank 1 sends 64 MiB to rank 0's all_gather, far more than the loopback
// socket holds, while rank 0 reads nothing for 3 s. Rank 1, blocked in its send, says whom it
// waits for after stall_notice_seconds, goes on waiting, and the data arrives whole.
TEST_CASE("collectives: a rank whose send stalls on a peer that does not read says so, and the data arrives") {
  if (kUnderThreadSanitizer) {
    MESSAGE("skipped under ThreadSanitizer: rank 1's slowed 64 MiB may reach rank 0 after its 3 s pause");
    return;
  }
  const int64_t n = int64_t{16} << 20;
  Tensor gathered;
  const std::string said = stderr_of([&] {
    run_ranks(
        2, [](LaunchEnvironment& env) { env.stall_notice_seconds = 1; },
        [&](Communicator& group) {
          const Tensor t = group.rank() == 1 ? arange(0, static_cast<double>(n), 1, {DType::f32}) : zeros({n});
          if (group.rank() == 0) std::this_thread::sleep_for(std::chrono::seconds(3));
          Tensor all = group.all_gather(t);
          if (group.rank() == 0) gathered = all;
        });
  });
  CHECK_MESSAGE(said.find("rank 1: waiting for rank 0 for") != std::string::npos, said);
  CHECK_MESSAGE(said.find("in a collective (sending to it)") != std::string::npos, said);
  CHECK_MESSAGE(said.find("This rank goes on waiting") != std::string::npos, said);
  REQUIRE(gathered.defined());
  REQUIRE(gathered.numel() == 2 * n);
  const float* v = gathered.data<float>() + n;  // rank 1's part
  for (int64_t i : {int64_t{0}, int64_t{1}, n / 2 + 3, n - 1}) CHECK(v[i] == static_cast<float>(i));
}

TEST_CASE(
    "all_gather_varying_rows (and to rank 0): parts of any size (none included) in rank order; a different row is "
    "refused") {
  const int world = 4;
  const std::vector<int64_t> rows = {2, 0, 5, 1};
  std::vector<Tensor> x(world), labels(world);
  for (int r = 0; r < world; ++r) {
    Generator g(test_seed("varying rows") + static_cast<uint64_t>(r));
    x[r] = randn({rows[r], 3, 2}, {}, &g);
    std::vector<int64_t> l;
    for (int64_t i = 0; i < rows[r]; ++i) l.push_back(10 * r + i);
    labels[r] = from_vector(l, {rows[r]});
  }
  std::vector<Tensor> gathered(world), gathered_labels(world), nothing(world), at_rank0(world);
  std::vector<std::vector<int64_t>> counts(world);
  run_ranks(world, [&](Communicator& group) {
    const int r = group.rank();
    gathered[r] = all_gather_varying_rows(x[r], group);
    gathered_labels[r] = all_gather_varying_rows(labels[r], group);
    nothing[r] = all_gather_varying_rows(zeros({0, 7}), group);
    at_rank0[r] = gather_varying_rows_to_rank0(x[r], group, &counts[r]);
  });
  const Tensor expected = cat({x[0], x[2], x[3]}, 0);
  const std::vector<int64_t> expected_labels = {0, 1, 20, 21, 22, 23, 24, 30};
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(max_abs_difference(gathered[r], expected) == 0);
    CHECK(gathered_labels[r].to_vector<int64_t>() == expected_labels);
    CHECK(nothing[r].shape() == Shape{0, 7});
    // The gather to rank 0: the same rows there, none elsewhere; every rank learns the counts.
    if (r == 0)
      CHECK(max_abs_difference(at_rank0[r], expected) == 0);
    else
      CHECK(at_rank0[r].shape() == Shape{0, 3, 2});
    CHECK(counts[r] == rows);
  }
  const std::string different = error_of([] {
    run_ranks(2, [](Communicator& group) { all_gather_varying_rows(zeros({2, group.rank() == 0 ? 3 : 4}), group); });
  });
  CHECK_MESSAGE(different.find("rows of 3 f32 values, rank 1 rows of 4 f32 values") != std::string::npos, different);
}

// A rank connecting before rank 0 listens can meet itself: when the port the kernel picks for the
// connecting end is rank 0's, TCP's simultaneous open connects the socket to itself, and the rank
// would read its own hello back as rank 0's answer. Binding a socket to a port and connecting it
// to that port makes the same connection on purpose.
TEST_CASE("tcp sockets: a connection that met itself is told apart from one that reached a listener") {
  sockaddr_in own{};
  const tcp::Socket self = bound_loopback_socket(&own);
  REQUIRE(tcp::connect_within(self.fd(), own, 5.0));
  CHECK(tcp::connected_to_itself(self.fd()));
  // A listener's connection has two ends, on the same address.
  sockaddr_in listening{};
  const tcp::Socket listener = bound_loopback_socket(&listening);
  REQUIRE(::listen(listener.fd(), 1) == 0);
  const tcp::Socket client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(tcp::connect_within(client.fd(), listening, 5.0));
  CHECK_FALSE(tcp::connected_to_itself(client.fd()));
  const tcp::Socket accepted(::accept(listener.fd(), nullptr, nullptr));
  REQUIRE(accepted.fd() >= 0);
  CHECK_FALSE(tcp::connected_to_itself(accepted.fd()));
  // A port bound but not listening refuses, and errno says so; an unconnected socket is not itself.
  sockaddr_in closed{};
  const tcp::Socket holder = bound_loopback_socket(&closed);
  const tcp::Socket refused(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const bool connected = tcp::connect_within(refused.fd(), closed, 5.0);
  const int error = errno;
  CHECK_FALSE(connected);
  CHECK(error == ECONNREFUSED);
  CHECK_FALSE(tcp::connected_to_itself(refused.fd()));
}

TEST_CASE("ranks_sharing_cores: ranks on the same cores count each other; ranks pinned apart do not") {
  const int world = 3;
  std::vector<int> shared(world), pinned(world);
  cpu_set_t original;
  REQUIRE(::sched_getaffinity(0, sizeof(original), &original) == 0);
  run_ranks(world, [&](Communicator& group) { shared[group.rank()] = ranks_sharing_cores(group); });
  for (int r = 0; r < world; ++r) CHECK(shared[r] == world);
  // Pinned: rank 0 to the first CPU this process may use, the others to the rest (affinity is per
  // thread). With one CPU there is nothing to pin apart.
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &original)) cpus.push_back(c);
  if (cpus.size() < 2) return;
  run_ranks(world, [&](Communicator& group) {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (group.rank() == 0) {
      CPU_SET(cpus[0], &mask);
    } else {
      for (size_t i = 1; i < cpus.size(); ++i) CPU_SET(cpus[i], &mask);
    }
    REQUIRE(::sched_setaffinity(0, sizeof(mask), &mask) == 0);
    pinned[group.rank()] = ranks_sharing_cores(group);
  });
  CHECK(pinned[0] == 1);
  CHECK(pinned[1] == world - 1);
  CHECK(pinned[2] == world - 1);
}

TEST_CASE("gpu_placement: ranks on one GPU count each other; a rank on the CPU is named") {
  const int world = 4;
  // Ranks 0 and 2 on one GPU, rank 1 on another, rank 3 on the CPU.
  const std::vector<std::string> gpus = {"gpu-a", "gpu-b", "gpu-a", ""};
  std::vector<GpuPlacement> seen(world);
  run_ranks(world, [&](Communicator& group) { seen[group.rank()] = gpu_placement(group, gpus[group.rank()]); });
  const std::vector<int> sharing = {2, 1, 2, 1};
  for (int r = 0; r < world; ++r) {
    CAPTURE(r);
    CHECK(seen[r].sharing_mine == sharing[r]);
    CHECK(seen[r].ranks_on_gpus == 3);
    CHECK(seen[r].shared == std::vector<int>{0, 2});
    CHECK(seen[r].first_rank_on_the_cpu == 3);
  }
  // A GPU each: nothing shared, nobody on the CPU.
  run_ranks(3, [&](Communicator& group) {
    seen[group.rank()] = gpu_placement(group, "gpu-" + std::to_string(group.rank()));
  });
  for (int r = 0; r < 3; ++r) {
    CHECK(seen[r].sharing_mine == 1);
    CHECK(seen[r].ranks_on_gpus == 3);
    CHECK(seen[r].shared.empty());
    CHECK(seen[r].first_rank_on_the_cpu == -1);
  }
}

TEST_CASE("contiguous_part: the parts, in order, are the dataset; their sizes differ by at most one") {
  data::Dataset d;
  d.root = "images";
  d.classes = {"a", "b"};
  for (int i = 0; i < 7; ++i) {
    d.files.push_back("f" + std::to_string(i));
    d.labels.push_back(i % 2);
  }
  for (int64_t parts : {1, 3, 7, 9}) {
    INFO(parts << " parts");
    std::vector<std::string> files;
    std::vector<int64_t> labels, sizes;
    for (int64_t p = 0; p < parts; ++p) {
      const data::Dataset part = data::contiguous_part(d, p, parts);
      CHECK(part.classes == d.classes);
      files.insert(files.end(), part.files.begin(), part.files.end());
      labels.insert(labels.end(), part.labels.begin(), part.labels.end());
      sizes.push_back(part.size());
    }
    CHECK(files == d.files);
    CHECK(labels == d.labels);
    CHECK(*std::max_element(sizes.begin(), sizes.end()) - *std::min_element(sizes.begin(), sizes.end()) <= 1);
  }
  const std::string missing = error_of([&] { data::contiguous_part(d, 3, 3); });
  CHECK_MESSAGE(missing.find("part 3 of 3 does not exist") != std::string::npos, missing);
}

// Every rank of `world` holds its contiguous part of the four sets; each must get `whole`.
void check_knn_across_ranks(int world, const Tensor& train, const Tensor& train_labels, const Tensor& test,
                            const Tensor& test_labels, int64_t classes, int64_t k, const KnnResult& whole) {
  INFO(world << " ranks");
  std::vector<KnnResult> got(static_cast<size_t>(world));
  run_ranks(world, [&](Communicator& group) {
    const int r = group.rank();
    auto part = [&](const Tensor& t) {
      const int64_t n = t.size(0), first = r * n / world;
      return t.narrow(0, first, (r + 1) * n / world - first).contiguous();
    };
    got[r] = knn_classify_across_ranks(part(train), part(train_labels), part(test), part(test_labels), classes, group,
                                       k, 0.07);
  });
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(got[r].correct1 == whole.correct1);
    CHECK(got[r].correct5 == whole.correct5);
    CHECK(got[r].count == whole.count);
    CHECK(got[r].top1 == whole.top1);
    CHECK(got[r].top5 == whole.top5);
  }
}

TEST_CASE("knn_classify_across_ranks: the ranks' parts give every rank the whole sets' kNN result") {
  // Clustered features, so that the vote is neither all right nor all wrong; 10 classes for top-5.
  const int64_t classes = 10, n_train = 53, n_test = 29, dims = 8;
  Generator g(test_seed("knn across ranks"));
  const Tensor centres = randn({classes, dims}, {}, &g);
  auto sample = [&](int64_t n, Tensor* features, Tensor* labels) {
    std::vector<int64_t> l;
    for (int64_t i = 0; i < n; ++i) l.push_back((i * 7) % classes);
    *labels = from_vector(l, {n});
    *features = add(index_select(centres, 0, *labels), mul(randn({n, dims}, {}, &g), 1.5));
  };
  Tensor train, train_labels, test, test_labels;
  sample(n_train, &train, &train_labels);
  sample(n_test, &test, &test_labels);
  const KnnResult whole = knn_classify(train, train_labels, test, test_labels, classes, 20, 0.07);
  REQUIRE(whole.count == n_test);
  REQUIRE(whole.correct1 > 0);
  REQUIRE(whole.correct1 < n_test);
  REQUIRE(whole.correct5 > whole.correct1);
  for (int world : {2, 3}) check_knn_across_ranks(world, train, train_labels, test, test_labels, classes, 20, whole);
}

TEST_CASE("knn_classify_across_ranks: tied neighbours fall as in one process; a rank may hold no rows") {
  // Three training rows with the same features and labels 0, 1, 2; k = 2. One process's topk keeps
  // the lower rows on a tie, 0 and 1, whose equal votes make class 0 the first: the three test
  // rows (class 0, the same features) are all right. Preferring the higher rows would make them
  // all wrong. On 4 ranks one rank holds no training row and one no test row.
  const Tensor u = from_vector(std::vector<float>{0.6f, 0.8f, 0.0f}, {1, 3});
  const Tensor train = cat({u, u, u}, 0), test = cat({u, u, u}, 0);
  const Tensor train_labels = from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  const Tensor test_labels = from_vector(std::vector<int64_t>{0, 0, 0}, {3});
  const KnnResult whole = knn_classify(train, train_labels, test, test_labels, 3, 2, 0.07);
  REQUIRE(whole.correct1 == 3);
  for (int world : {2, 3, 4}) check_knn_across_ranks(world, train, train_labels, test, test_labels, 3, 2, whole);
}

TEST_CASE("knn_classify_across_ranks: among tied neighbours the lowest rows vote, whichever rank holds them") {
  // Eight training rows with the same features, labels 0 1 1 2 2 2 2 2, k = 3: one process takes
  // rows 0, 1 and 2, which elect class 1, the test rows' class. Taking other tied rows, or rows
  // numbered from each rank's own first row (no offset: rows 0, 1, 2 of every rank, labels 0 0 1),
  // elects class 0 or 2.
  const Tensor u = from_vector(std::vector<float>{0.3f, -0.4f, 0.5f, 0.7f}, {1, 4});
  const Tensor train = cat({u, u, u, u, u, u, u, u}, 0), test = cat({u, u, u}, 0);
  const Tensor train_labels = from_vector(std::vector<int64_t>{0, 1, 1, 2, 2, 2, 2, 2}, {8});
  const Tensor test_labels = from_vector(std::vector<int64_t>{1, 1, 1}, {3});
  const KnnResult whole = knn_classify(train, train_labels, test, test_labels, 3, 3, 0.07);
  REQUIRE(whole.correct1 == 3);
  for (int world : {2, 3, 4}) check_knn_across_ranks(world, train, train_labels, test, test_labels, 3, 3, whole);
}

TEST_CASE("knn_classify_across_ranks: a rank with mismatched inputs fails, and so do the others, without waiting") {
  const std::string error = error_of([] {
    run_ranks(3, [](Communicator& group) {
      const int64_t labels = group.rank() == 1 ? 3 : 2;  // rank 1: a label too many
      knn_classify_across_ranks(zeros({2, 4}), zeros({labels}, {DType::i64}), zeros({1, 4}), zeros({1}, {DType::i64}),
                                2, group);
    });
  });
  // run_ranks rethrows rank 0's error: it names the other rank's failure.
  CHECK_MESSAGE(error.find("another rank's features or labels do not match") != std::string::npos, error);
}

TEST_CASE("train_linear_probe_across_ranks: every rank gets one process's probe of the whole sets") {
  // Six classes around random centres, noisy enough that the probe gets some rows wrong; five
  // epochs, each augmented one with fresh noise and the rows in another order. The ranks hold
  // contiguous parts (on 3 ranks of 2 validation rows, one holds none) and their batch is the whole.
  Generator g(test_seed("linear probe across ranks"));
  const Tensor centres = randn({6, 12}, {}, &g);
  auto sample = [&](int64_t n) {
    std::vector<int64_t> l;
    for (int64_t i = 0; i < n; ++i) l.push_back((i * 5) % 6);
    FeatureSet set;
    set.labels = from_vector(l, {n});
    set.features = add(index_select(centres, 0, set.labels), mul(randn({n, 12}, {}, &g), 1.3));
    const Tensor order = randperm(n, &g);
    set.features = index_select(set.features, 0, order);
    set.labels = index_select(set.labels, 0, order);
    set.num_classes = 6;
    return set;
  };
  auto part = [](const FeatureSet& whole, int r, int world) {
    const int64_t n = whole.features.size(0), first = r * n / world, rows = (r + 1) * n / world - first;
    return FeatureSet{whole.features.narrow(0, first, rows).contiguous(),
                      whole.labels.narrow(0, first, rows).contiguous(), whole.num_classes};
  };
  for (int64_t val_rows : {int64_t{90}, int64_t{2}}) {
    const FeatureSet val = sample(val_rows);
    std::vector<FeatureSet> epochs;
    for (int e = 0; e < 5; ++e) epochs.push_back(sample(100));
    for (bool bn_head : {false, true}) {
      CAPTURE(val_rows);
      CAPTURE(bn_head);
      LinearProbeOptions o;
      o.epochs = 5;
      o.lr = 0.3;
      o.batch_size = 24;  // 100 rows: 5 steps an epoch, the last of 4 rows
      o.bn_head = bn_head;
      o.verbose = false;
      o.val_freq = 2;  // validations after epochs 1, 3 and 5, the best of them reported too
      LinearProbeBest one_best;
      const KnnResult one = train_linear_probe(
          epochs[0], val, o, [&](int64_t epoch) { return epochs[static_cast<size_t>(epoch)]; }, &one_best);
      CHECK(one_best.validations == 3);
      if (val_rows > 2) {
        REQUIRE(one.correct1 > 0);
        REQUIRE(one.correct1 < one.count);
      }
      for (int world : {2, 3}) {
        INFO(world << " ranks");
        std::vector<KnnResult> got(static_cast<size_t>(world));
        std::vector<LinearProbeBest> got_best(static_cast<size_t>(world));
        std::vector<std::vector<int64_t>> asked(static_cast<size_t>(world));
        run_ranks(world, [&](Communicator& group) {
          const int r = group.rank();
          got[r] = train_linear_probe_across_ranks(
              part(epochs[0], r, world), part(val, r, world), o, group,
              [&](int64_t epoch) {
                asked[r].push_back(epoch);
                return part(epochs[static_cast<size_t>(epoch)], r, world);
              },
              &got_best[r]);
        });
        for (int r = 0; r < world; ++r) {
          INFO("rank " << r);
          CHECK(got[r].top1 == one.top1);
          CHECK(got[r].top5 == one.top5);
          CHECK(got[r].correct1 == one.correct1);
          CHECK(got[r].count == one.count);
          CHECK(asked[r] == std::vector<int64_t>{1, 2, 3, 4});  // epoch 0's are the part given
          CHECK(got_best[r].result.top1 == one_best.result.top1);
          CHECK(got_best[r].result.correct1 == one_best.result.correct1);
          CHECK(got_best[r].epoch == one_best.epoch);
          CHECK(got_best[r].validations == 3);
        }
      }
    }
  }
}

TEST_CASE("check_ranks_agree and the linear probe's checks stop every rank together, naming what differs") {
  // One rank with other flags: every rank throws (run_ranks rethrows rank 0's), naming it.
  const std::string one = error_of([] {
    run_ranks(3, [](Communicator& group) {
      check_ranks_agree(group, group.rank() == 2 ? "--seed 7" : "--seed 0", "flags", "the same ones");
    });
  });
  CHECK_MESSAGE(one.find("rank 2 was started with other flags than rank 0: the same ones") != std::string::npos, one);
  const std::string two = error_of([] {
    run_ranks(3, [](Communicator& group) {
      check_ranks_agree(group, group.rank() == 0 ? "a" : "b", "folders", "the same files");
    });
  });
  CHECK_MESSAGE(two.find("ranks 1, 2 were started with other folders than rank 0") != std::string::npos, two);
  // Named items: the message names those that differ on any rank, in their order.
  const std::string named = error_of([] {
    run_ranks(3, [](Communicator& group) {
      const std::string r = std::to_string(group.rank());
      check_ranks_agree(
          group, {{"--lr", group.rank() == 1 ? "0.1" : "0.5"}, {"--depth", "4"}, {"--seed", r == "2" ? "7" : "0"}},
          "flags", "the same ones");
    });
  });
  CHECK_MESSAGE(named.find("ranks 1, 2 were started with other flags than rank 0 (--lr, --seed): the same ones") !=
                    std::string::npos,
                named);
  // A rank with another list of items (another build): stopped before the items are compared.
  const std::string listed = error_of([] {
    run_ranks(2, [](Communicator& group) {
      std::vector<std::pair<std::string, std::string>> items = {{"--lr", "0.5"}};
      if (group.rank() == 1) items.emplace_back("--new_flag", "1");
      check_ranks_agree(group, items, "flags", "the same ones");
    });
  });
  CHECK_MESSAGE(
      listed.find("rank 1 was started with other flags than rank 0 (another build of the tool?)") != std::string::npos,
      listed);
  std::vector<int> agreed(3, 0);
  run_ranks(3, [&](Communicator& group) {
    check_ranks_agree(group, "same", "flags", "");
    agreed[group.rank()] = 1;
  });
  CHECK(agreed == std::vector<int>{1, 1, 1});
  // The probe: rank 1's labels do not match its features; every rank stops before the gathers.
  const std::string probe = error_of([] {
    run_ranks(3, [](Communicator& group) {
      const int64_t labels = group.rank() == 1 ? 3 : 2;
      LinearProbeOptions o;
      o.verbose = false;
      train_linear_probe_across_ranks(FeatureSet{zeros({2, 4}), zeros({labels}, {DType::i64}), 2},
                                      FeatureSet{zeros({1, 4}), zeros({1}, {DType::i64}), 2}, o, group);
    });
  });
  CHECK_MESSAGE(probe.find("another rank's features or labels do not match") != std::string::npos, probe);
}

TEST_CASE("all_gather_rows and sum_over_ranks: the gradient is summed over ranks (each rank's loss is its part)") {
  const int world = 2;
  Generator g0(test_seed("gather_grad"));
  std::vector<Tensor> weights(world), gather_grads(world), sum_grads(world);
  for (int r = 0; r < world; ++r) weights[r] = randn({6, 2}, {DType::f64}, &g0);  // rank r's part of the loss
  run_ranks(world, [&](Communicator& group) {
    const int r = group.rank();
    Generator g(static_cast<uint64_t>(100 + r));
    Tensor x = randn({3, 2}, {DType::f64}, &g).requires_grad_(true);
    sum(mul(all_gather_rows(x, group), weights[r])).backward();
    gather_grads[r] = x.grad();
    Tensor s = randn({6, 2}, {DType::f64}, &g).requires_grad_(true);
    sum(mul(sum_over_ranks(s, group), weights[r])).backward();
    sum_grads[r] = s.grad();
  });
  const Tensor total = add(weights[0], weights[1]);
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(max_abs_difference(gather_grads[r], total.narrow(0, 3 * r, 3)) < 1e-15);
    CHECK(max_abs_difference(sum_grads[r], total) < 1e-15);
  }
}

TEST_CASE("batch_norm_across_ranks equals BatchNorm over the whole batch: output, running statistics, gradients") {
  const int world = 2;
  const int64_t N = 5, C = 4;
  Generator g(test_seed("sync_batch_norm"));
  const Tensor X = add(mul(randn({world * N, C}, {DType::f64}, &g), 3.0), 1.0);
  const Tensor W = randn({world * N, C}, {DType::f64}, &g);  // the loss weights
  const Tensor gamma0 = add(randn({C}, {DType::f64}, &g), 1.0), beta0 = randn({C}, {DType::f64}, &g);
  // One process, the fused op.
  Tensor X1 = X.clone().requires_grad_(true), gamma = gamma0.clone().requires_grad_(true),
         beta = beta0.clone().requires_grad_(true);
  Tensor running_mean = zeros({C}, {DType::f64}), running_var = ones({C}, {DType::f64});
  Tensor out = batch_norm(X1, gamma, beta, running_mean, running_var, true, 0.1, 1e-5);
  sum(mul(out, W)).backward();
  std::vector<Tensor> outs(world), x_grads(world), gamma_grads(world), beta_grads(world), means(world), vars(world);
  run_ranks(world, [&](Communicator& group) {
    const int r = group.rank();
    Tensor x = X.narrow(0, r * N, N).clone().requires_grad_(true);
    Tensor gr = gamma0.clone().requires_grad_(true), br = beta0.clone().requires_grad_(true);
    means[r] = zeros({C}, {DType::f64});
    vars[r] = ones({C}, {DType::f64});
    outs[r] = batch_norm_across_ranks(x, gr, br, means[r], vars[r], 0.1, 1e-5, group);
    sum(mul(outs[r], W.narrow(0, r * N, N))).backward();
    x_grads[r] = x.grad();
    gamma_grads[r] = gr.grad();
    beta_grads[r] = br.grad();
  });
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(max_abs_difference(outs[r].detach(), out.detach().narrow(0, r * N, N)) < 1e-12);
    CHECK(max_abs_difference(x_grads[r], X1.grad().narrow(0, r * N, N)) < 1e-12);
    CHECK(max_abs_difference(means[r], running_mean) < 1e-14);
    CHECK(max_abs_difference(vars[r], running_var) < 1e-13);
  }
  // The objective is the sum of the ranks' losses: the parameter gradients sum over ranks.
  CHECK(max_abs_difference(add(gamma_grads[0], gamma_grads[1]), gamma.grad()) < 1e-12);
  CHECK(max_abs_difference(add(beta_grads[0], beta_grads[1]), beta.grad()) < 1e-12);
}

TEST_CASE("bam_loss_across_ranks: the ranks' parts add up to bam_loss over the whole batch, target and gradient too") {
  // Three ranks of two images (W != B, and a middle rank), all options, and more target crops than
  // global ones.
  const int world = 3;
  const int64_t B = 2, D = 8;
  for (bool teacher : {false, true})
    for (int64_t top_k : {int64_t{0}, int64_t{4}})
      for (bool masking : {true, false})
        for (int64_t target_crops : {int64_t{2}, int64_t{3}}) {
          INFO("teacher " << teacher << ", top_k " << top_k << ", masking " << masking << ", target_crops "
                          << target_crops);
          BamLossOptions o;
          o.n_global = 2;
          o.n_local = 2;
          o.target_crops = target_crops;
          o.top_k = top_k;
          o.positive_masking = masking;
          const int64_t V = o.n_global + o.n_local;
          Generator g(test_seed("bam_loss_across_ranks"));
          // The whole batch, crop-major: view v of image i (i = r*B + b) at row v*W*B + i.
          const Tensor Z = randn({V * world * B, D}, {DType::f64}, &g),
                       Zt = randn({V * world * B, D}, {DType::f64}, &g);
          auto rows_of = [&](const Tensor& all, int r, int64_t views) {
            std::vector<Tensor> parts;
            for (int64_t v = 0; v < views; ++v) parts.push_back(all.narrow(0, v * world * B + r * B, B));
            return cat(parts, 0);
          };
          Tensor Z1 = Z.clone().requires_grad_(true);
          BamLossResult whole = bam_loss(Z1, 0.05, o, teacher ? Zt : Tensor());
          whole.loss.backward();
          std::vector<double> parts(world), totals(world), entropies(world);
          std::vector<Tensor> grads(world), targets(world);
          run_ranks(world, [&](Communicator& group) {
            const int r = group.rank();
            Tensor z = rows_of(Z, r, V).requires_grad_(true);
            BamLossResult part = bam_loss_across_ranks(z, 0.05, o, teacher ? rows_of(Zt, r, V) : Tensor(), group);
            part.loss.backward();
            parts[r] = part.loss.item();
            totals[r] = part.loss_over_ranks.item();
            entropies[r] = part.target_entropy.item();
            grads[r] = z.grad();
            targets[r] = part.target;
          });
          CHECK(parts[0] + parts[1] + parts[2] == doctest::Approx(whole.loss.item()).epsilon(1e-12));
          for (int r = 0; r < world; ++r) {
            INFO("rank " << r);
            CHECK(totals[r] == doctest::Approx(whole.loss.item()).epsilon(1e-6));  // reported in f32
            CHECK(entropies[r] == doctest::Approx(whole.target_entropy.item()).epsilon(1e-6));
            CHECK(max_abs_difference(targets[r], rows_of(whole.target, r, o.n_global)) < 1e-12);
          }
          // Each rank's rows get their gradient of the whole loss (the activation gradients of one
          // process, which fp16's loss scaling relies on).
          for (int r = 0; r < world; ++r) {
            INFO("rank " << r);
            CHECK(max_abs_difference(grads[r], rows_of(Z1.grad(), r, V)) < 1e-12);
          }
        }
}

TEST_CASE("sinkhorn_target_across_ranks with one rank is the fused kernel, in f32 and f64") {
  Generator g(test_seed("sinkhorn one rank"));
  for (DType dtype : {DType::f32, DType::f64})
    for (bool masking : {true, false}) {
      INFO(dtype_name(dtype) << ", masking " << masking);
      const int64_t B = 16, V = 4, T = 2;
      const Tensor s = sub(mul(rand({V * B, T * B}, {dtype}, &g), 2.0), 1.0);  // cosines in [-1, 1]
      const Tensor kernel = sinkhorn_target(s, 0.05, 3, B, T, masking, 2 * B);
      Tensor ops;
      run_ranks(
          1, [&](Communicator& group) { ops = sinkhorn_target_across_ranks(s, 0.05, 3, B, T, masking, 2 * B, group); });
      // The same K (one rounding of exp, as the kernel's) and f64 sums in another order.
      CHECK(max_abs_difference(ops, kernel) < (dtype == DType::f32 ? 1e-7 : 1e-15));
    }
}

TEST_CASE("sum_gradients_over_ranks: the sum over ranks, per dtype; a parameter without a gradient keeps none") {
  const int world = 3;
  std::vector<Tensor> p_grads(world), q_grads(world), d_grads(world);
  run_ranks(world, [&](Communicator& group) {
    const int r = group.rank();
    Tensor p = zeros({2, 3}).requires_grad_(true), q = zeros({4}).requires_grad_(true);
    Tensor d = zeros({5}, {DType::f64}).requires_grad_(true);
    p.set_grad(full({2, 3}, r + 1.0));
    d.set_grad(full({5}, 0.25 * r, {DType::f64}));
    sum_gradients_over_ranks({p, q, d}, group);
    p_grads[r] = p.grad();
    q_grads[r] = q.grad();
    d_grads[r] = d.grad();
  });
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK(max_abs_difference(p_grads[r], full({2, 3}, 6.0)) == 0);
    CHECK_FALSE(q_grads[r].defined());
    CHECK(max_abs_difference(d_grads[r], full({5}, 0.75, {DType::f64})) == 0);
  }
}

TEST_CASE("a sharded loader's ranks take, together, one process's batches: rank r the images at r*B of each") {
  data::Dataset d;
  d.root = "images";
  for (int i = 0; i < 23; ++i) {
    d.files.push_back("f" + std::to_string(i));
    d.labels.push_back(-1);
  }
  const data::BatchSequence whole(d, 6, true, true, 7);
  const data::BatchSequence rank0(d, 3, true, true, 7, {0, 2}), rank1(d, 3, true, true, 7, {1, 2});
  REQUIRE(whole.steps_per_epoch() == 3);
  CHECK(rank0.steps_per_epoch() == 3);
  CHECK(rank1.steps_per_epoch() == 3);
  for (int64_t g = 0; g < 6; ++g) {  // two epochs
    CHECK(rank0.first_position(g) == whole.first_position(g));
    CHECK(rank1.first_position(g) == whole.first_position(g) + 3);
    CHECK(rank0.rows(g) == 3);
    CHECK(rank1.rows(g) == 3);
  }
  const std::string kept = error_of([&] { data::BatchSequence(d, 3, false, true, 7, {0, 2}); });
  CHECK_MESSAGE(kept.find("needs drop_last") != std::string::npos, kept);
  const std::string too_few = error_of([&] { data::BatchSequence(d, 12, true, true, 7, {1, 2}); });
  CHECK_MESSAGE(too_few.find("fewer than one batch of 24") != std::string::npos, too_few);
}

}  // namespace
}  // namespace bam::test
