// The f32 LayerNorm's AVX-512 twins (kernels/cpu/layer_norm_avx512.cpp) against the portable loops
// they copy (layer_norm.cpp), bit for bit: outputs, saved statistics and all three gradients, at
// widths around the 8- and 16-lane steps and at the project's widths, with and without the affine
// parameters, with rows far from zero mean (where the double statistics matter), and with the
// outputs poisoned with NaN first. (The op table's cases check the loops themselves against
// their definition and their gradients.) And BatchNorm's sums: the same bits on any thread count.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/parallel.h"
#include "tests/bit_compare.h"
#include "tests/doctest_text.h"

namespace {

using bam::test::differing_bits;

struct LayerNormRun {
  std::vector<float> y, mean, rstd, dx, d_weight, d_bias;
};

struct LayerNormCase {
  int64_t rows, cols;
  bool affine, want_dx, want_params;
};

LayerNormRun run_layer_norm(const char* kernel, const LayerNormCase& c, const std::vector<float>& x,
                            const std::vector<float>& weight, const std::vector<float>& bias,
                            const std::vector<float>& dy) {
  REQUIRE(bam::cpu::layer_norm_force_kernel(kernel));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto n = static_cast<size_t>(c.rows * c.cols);
  LayerNormRun out{std::vector<float>(n, nan),
                   std::vector<float>(static_cast<size_t>(c.rows), nan),
                   std::vector<float>(static_cast<size_t>(c.rows), nan),
                   std::vector<float>(n, nan),
                   std::vector<float>(static_cast<size_t>(c.cols), nan),
                   std::vector<float>(static_cast<size_t>(c.cols), nan)};
  const float* w = c.affine ? weight.data() : nullptr;
  const float* b = c.affine ? bias.data() : nullptr;
  bam::cpu::layer_norm_forward<float>(x.data(), w, b, out.y.data(), out.mean.data(), out.rstd.data(), c.rows, c.cols,
                                      1e-6);
  bam::cpu::layer_norm_backward<float>(
      x.data(), w, out.mean.data(), out.rstd.data(), dy.data(), c.want_dx ? out.dx.data() : nullptr,
      c.want_params ? out.d_weight.data() : nullptr, c.want_params ? out.d_bias.data() : nullptr, c.rows, c.cols);
  bam::cpu::layer_norm_force_kernel("auto");
  return out;
}

}  // namespace

TEST_CASE("layer_norm<float>: the AVX-512 twins give the portable loops' bits") {
  REQUIRE(bam::cpu::layer_norm_force_kernel("auto"));
  const bool twin = std::string(bam::cpu::layer_norm_kernel_name()) == "avx512";
  MESSAGE("f32 LayerNorm on this CPU: ", twin ? "the AVX-512 twins (compared with the portable loops)"
                                              : "the portable loops (no AVX-512: nothing to compare)");
  CHECK(twin == bam::cpu::cpu_has_avx512());
  CHECK_FALSE(bam::cpu::layer_norm_force_kernel("avx2"));
  REQUIRE(bam::cpu::layer_norm_force_kernel("portable"));
  CHECK(std::string(bam::cpu::layer_norm_kernel_name()) == "portable");
  REQUIRE(bam::cpu::layer_norm_force_kernel("auto"));

  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<LayerNormCase> cases;
  for (int64_t cols : {1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 64, 100, 128, 192, 384}) {
    for (int64_t rows : {1, 5, 67}) cases.push_back({rows, cols, true, true, true});
  }
  cases.push_back({300, 128, false, true, true});
  cases.push_back({300, 33, true, false, true});
  cases.push_back({300, 33, true, true, false});
  cases.push_back({300, 33, false, true, false});
  int64_t total_differ = 0;
  for (const LayerNormCase& c : cases) {
    CAPTURE(c.rows);
    CAPTURE(c.cols);
    CAPTURE(c.affine);
    const auto n = static_cast<size_t>(c.rows * c.cols);
    std::vector<float> x(n), dy(n), weight(static_cast<size_t>(c.cols)), bias(static_cast<size_t>(c.cols));
    // Rows centred far from zero, with spreads from 0.01 to 100: the mean's and variance's double
    // sums decide the low bits here.
    for (int64_t r = 0; r < c.rows; ++r) {
      const float centre = 1000.0f * normal(rng), spread = std::pow(10.0f, static_cast<float>(r % 5) - 2.0f);
      for (int64_t j = 0; j < c.cols; ++j) x[static_cast<size_t>(r * c.cols + j)] = centre + spread * normal(rng);
    }
    for (float& v : dy) v = normal(rng);
    for (float& v : weight) v = 1.0f + 0.5f * normal(rng);
    for (float& v : bias) v = normal(rng);
    const LayerNormRun portable = run_layer_norm("portable", c, x, weight, bias, dy);
    const LayerNormRun automatic = run_layer_norm("auto", c, x, weight, bias, dy);
    const int64_t differ =
        differing_bits(portable.y, automatic.y) + differing_bits(portable.mean, automatic.mean) +
        differing_bits(portable.rstd, automatic.rstd) + (c.want_dx ? differing_bits(portable.dx, automatic.dx) : 0) +
        (c.want_params
             ? differing_bits(portable.d_weight, automatic.d_weight) + differing_bits(portable.d_bias, automatic.d_bias)
             : 0);
    CHECK(differ == 0);
    total_differ += differ;
    // The outputs were written (the NaN poison is gone), and what was not asked for was not.
    int64_t nans = 0;
    for (float v : automatic.y) nans += std::isnan(v);
    for (float v : automatic.mean) nans += std::isnan(v);
    for (float v : automatic.rstd) nans += std::isnan(v);
    if (c.want_dx) {
      for (float v : automatic.dx) nans += std::isnan(v);
    }
    if (c.want_params) {
      for (float v : automatic.d_weight) nans += std::isnan(v);
      for (float v : automatic.d_bias) nans += std::isnan(v);
    }
    CHECK(nans == 0);
    if (!c.want_dx) CHECK(std::isnan(automatic.dx[0]));
    if (!c.want_params) CHECK(std::isnan(automatic.d_bias[0]));
  }
  CHECK(total_differ == 0);
}

TEST_CASE("BatchNorm's statistics and gradients have the same bits on any number of threads") {
  // The per-channel sums were split into one slice per thread: their rounding followed the count.
  const int64_t N = 1000, C = 4, L = 1;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(N * C), dy(N * C);
  for (int64_t i = 0; i < N * C; ++i) {
    x[i] = u(rng) * (i % 3 == 0 ? 1e4f : 1e-3f);  // magnitudes far apart: the order of the sums shows
    dy[i] = u(rng);
  }
  const int before = bam::cpu::num_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3}) {
    bam::cpu::set_num_threads(threads);
    std::vector<float> mean(C), var(C), rstd(C), dx(N * C), dw(C), db(C);
    bam::cpu::batch_norm_stats<float>(x.data(), mean.data(), var.data(), N, C, L);
    for (int64_t c = 0; c < C; ++c) rstd[c] = 1.0f / std::sqrt(var[c] + 1e-5f);
    bam::cpu::batch_norm_backward<float>(x.data(), mean.data(), rstd.data(), nullptr, dy.data(), dx.data(), dw.data(),
                                         db.data(), N, C, L, true);
    std::vector<float> all = mean;
    all.insert(all.end(), var.begin(), var.end());
    all.insert(all.end(), dx.begin(), dx.end());
    all.insert(all.end(), dw.begin(), dw.end());
    all.insert(all.end(), db.begin(), db.end());
    results.push_back(all);
  }
  bam::cpu::set_num_threads(before);
  CHECK(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)) == 0);
  CHECK(std::memcmp(results[0].data(), results[2].data(), results[0].size() * sizeof(float)) == 0);
}
