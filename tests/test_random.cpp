// The counter-based RNG: Philox known answers, stream identity per key, distinct keys, offsets,
// distribution moments, truncated normals, permutations, dropout statistics, thread independence.
#include <algorithm>
#include <cmath>
#include <set>

#include "engine/random.h"
#include "kernels/cpu/parallel.h"
#include "tests/support.h"

namespace bam::test {

TEST_CASE("Philox4x32-10 matches the published known-answer vectors") {
  // From the Random123 distribution (kat_vectors): counter, key -> output.
  PhiloxBlock zero = philox4x32_10({{0, 0, 0, 0}}, {0, 0});
  CHECK(zero.w[0] == 0x6627e8d5u);
  CHECK(zero.w[1] == 0xe169c58du);
  CHECK(zero.w[2] == 0xbc57ac4cu);
  CHECK(zero.w[3] == 0x9b00dbd8u);
  PhiloxBlock ones = philox4x32_10({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, {0xffffffffu, 0xffffffffu});
  CHECK(ones.w[0] == 0x408f276du);
  CHECK(ones.w[1] == 0x41c83b0eu);
  CHECK(ones.w[2] == 0xa20bc7c6u);
  CHECK(ones.w[3] == 0x6d5451fdu);
  PhiloxBlock pi = philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, {0xa4093822u, 0x299f31d0u});
  CHECK(pi.w[0] == 0xd16cfe09u);
  CHECK(pi.w[1] == 0x94fdccebu);
  CHECK(pi.w[2] == 0x5001e420u);
  CHECK(pi.w[3] == 0x24126ea1u);
}

TEST_CASE("the same key gives the same stream; different keys and offsets differ") {
  Generator a(1234), b(1234), c(1235);
  auto va = rand({64}, {}, &a).to_vector<float>();
  auto vb = rand({64}, {}, &b).to_vector<float>();
  auto vc = rand({64}, {}, &c).to_vector<float>();
  CHECK(va == vb);
  CHECK(va != vc);
  // The next draw continues the stream instead of repeating it.
  auto va2 = rand({64}, {}, &a).to_vector<float>();
  CHECK(va2 != va);
  CHECK(a.offset() == 32);
  // Restoring the offset replays exactly (this is how a resumed run sees the same numbers).
  a.set_offset(16);
  CHECK(rand({64}, {}, &a).to_vector<float>() == va2);
  // manual_seed resets the default generator.
  manual_seed(99);
  auto d1 = randn({10}).to_vector<float>();
  manual_seed(99);
  CHECK(randn({10}).to_vector<float>() == d1);
  // Adjacent seeds are not shifted copies of each other.
  std::set<float> overlap(va.begin(), va.end());
  int shared = 0;
  for (float v : vc) shared += overlap.count(v);
  CHECK(shared < 4);
}

TEST_CASE("draws do not depend on the number of threads") {
  int threads = cpu::num_threads();
  Generator g1(5), g2(5);
  cpu::set_num_threads(1);
  auto one = randn({5000}, {}, &g1).to_vector<float>();
  cpu::set_num_threads(std::max(2, threads));
  auto many = randn({5000}, {}, &g2).to_vector<float>();
  cpu::set_num_threads(threads);
  CHECK(one == many);
}

TEST_CASE("distribution moments") {
  Generator g(test_seed("distribution moments"));
  const int n = 200000;
  auto u = rand({n}, {DType::f64}, &g).to_vector<double>();
  double mean = 0, var = 0;
  for (double v : u) {
    CHECK_MESSAGE((v >= 0 && v < 1), "uniform value " << v << " outside [0, 1)");
    mean += v;
  }
  mean /= n;
  for (double v : u) var += (v - mean) * (v - mean);
  var /= n;
  // Standard errors: sqrt(1/12/n) ~ 6.5e-4 for the mean; 5 sigma bounds.
  CHECK(std::abs(mean - 0.5) < 0.0033);
  CHECK(std::abs(var - 1.0 / 12) < 0.002);

  auto z = randn({n}, {DType::f64}, &g).to_vector<double>();
  double m1 = 0, m2 = 0, m4 = 0;
  for (double v : z) m1 += v;
  m1 /= n;
  for (double v : z) {
    m2 += (v - m1) * (v - m1);
    m4 += std::pow(v - m1, 4);
  }
  m2 /= n;
  m4 /= n;
  CHECK(std::abs(m1) < 0.012);
  CHECK(std::abs(m2 - 1) < 0.02);
  CHECK(std::abs(m4 / (m2 * m2) - 3) < 0.1);  // kurtosis of a normal

  auto t = trunc_normal({n}, 0.5, 0.02, -2, 2, {DType::f64}, &g).to_vector<double>();
  double tm = 0;
  for (double v : t) tm += v;
  CHECK(std::abs(tm / n - 0.5) < 0.001);
  auto tight = trunc_normal({n}, 0.0, 1.0, -0.5, 0.5, {DType::f64}, &g).to_vector<double>();
  CHECK(*std::min_element(tight.begin(), tight.end()) >= -0.5);
  CHECK(*std::max_element(tight.begin(), tight.end()) <= 0.5);
  // Mass near the bounds of a truncated N(0,1) on [-0.5, 0.5] is lower than at the centre.
  int centre = 0, edge = 0;
  for (double v : tight) {
    centre += std::abs(v) < 0.05;
    edge += std::abs(v) > 0.45;
  }
  CHECK(edge < centre);
  CHECK(edge > centre * 0.8);  // but only slightly: exp(-0.125) ~ 0.88
}

TEST_CASE("randint, randperm and erfinv") {
  Generator g(test_seed("randint"));
  auto r = randint(-3, 4, {20000}, {DType::i64}, &g).to_vector<int64_t>();
  std::vector<int> counts(7, 0);
  for (int64_t v : r) {
    REQUIRE((v >= -3 && v < 4));
    ++counts[v + 3];
  }
  for (int c : counts) CHECK(std::abs(c - 20000 / 7.0) < 350);  // 7 standard deviations
  auto p = randperm(1000, &g).to_vector<int64_t>();
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) CHECK(sorted[i] == i);
  CHECK(p != sorted);
  for (double y : {-0.999, -0.5, 0.0, 0.1, 0.7, 0.99999})
    CHECK(std::erf(erfinv(y)) == doctest::Approx(y).epsilon(1e-12));
}

TEST_CASE("dropout keeps about 1-p of the values, scaled by 1/(1-p)") {
  Generator g(test_seed("dropout"));
  Tensor x = ones({100000});
  auto y = dropout(x, 0.25, true, &g).to_vector<float>();
  int kept = 0;
  for (float v : y) {
    CHECK_MESSAGE((v == 0.0f || std::abs(v - 1.0f / 0.75f) < 1e-6f), "dropout output " << v);
    kept += v != 0.0f;
  }
  CHECK(std::abs(kept / 100000.0 - 0.75) < 0.01);
  CHECK(dropout(x, 0.25, false, &g).same(x));
  // drop_path keeps or drops whole samples: each row is all 0 or all 1/(1-p), kept with 1-p.
  auto paths = drop_path(ones({4000, 3}), 0.25, true, &g).to_vector<float>();
  int kept_rows = 0;
  for (int i = 0; i < 4000; ++i) {
    CHECK((paths[3 * i] == paths[3 * i + 1] && paths[3 * i] == paths[3 * i + 2]));
    CHECK_MESSAGE((paths[3 * i] == 0.0f || std::abs(paths[3 * i] - 1.0f / 0.75f) < 1e-6f),
                  "drop_path output " << paths[3 * i]);
    kept_rows += paths[3 * i] != 0.0f;
  }
  CHECK(std::abs(kept_rows / 4000.0 - 0.75) < 0.035);  // 5 standard deviations (0.0068)
  CHECK(drop_path(x, 0.25, false, &g).same(x));
}

TEST_CASE("parallel_for covers every index exactly once") {
  const int original = cpu::num_threads();
  for (int threads : {1, 2, 3, 8}) {
    cpu::set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 1000, 100003}) {
      std::vector<int> seen(n, 0);
      cpu::parallel_for(n, 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) ++seen[i];
        // Nested regions run serially instead of deadlocking.
        cpu::parallel_for(4, 1, [](int64_t, int64_t) {});
      });
      CHECK(std::count(seen.begin(), seen.end(), 1) == n);
    }
  }
  cpu::set_num_threads(original);
}

}  // namespace bam::test
