// Tests for kernels/cpu/attention: the f32 kernels (on a CPU with AVX-512 the per-head kernels of
// attention_avx512.cpp, else the loop through the general GEMM) against the f64 loop, forward
// (output and softmax) and backward, at the token counts and head sizes this project uses and at
// the edges of the kernels' 16-lane vectors and 4 x 32 tiles.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/parallel.h"
#include "tests/doctest_text.h"

namespace {

// Largest |a - b| / (tol_abs + tol_rel * |b|) over the elements: at most 1 passes.
double worst(const std::vector<float>& a, const std::vector<double>& b, double tol_abs, double tol_rel) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(static_cast<double>(a[i]) - b[i]) / (tol_abs + tol_rel * std::abs(b[i]));
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();  // an unwritten (poisoned) output
    w = std::max(w, e);
  }
  return w;
}

void check_attention(int64_t B, int64_t N, int64_t H, int64_t D, std::mt19937& rng) {
  const int64_t C = H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> qkv(static_cast<size_t>(B * N * 3 * C)), d_out(static_cast<size_t>(B * N * C));
  // Large enough scores that the softmax is far from uniform.
  for (double& x : qkv) x = 1.5 * normal(rng);
  for (double& x : d_out) x = normal(rng);
  std::vector<float> qkv32(qkv.begin(), qkv.end()), d_out32(d_out.begin(), d_out.end());
  // Poisoned outputs: every element must be written.
  const float poison = std::nanf("");
  std::vector<float> out32(d_out.size(), poison), probs32(static_cast<size_t>(B * H * N * N), poison),
      d_qkv32(qkv.size(), poison);
  std::vector<double> out(d_out.size()), probs(probs32.size()), d_qkv(qkv.size());
  bam::cpu::attention_forward<float>(qkv32.data(), out32.data(), probs32.data(), B, N, H, D, scale);
  bam::cpu::attention_backward<float>(qkv32.data(), probs32.data(), d_out32.data(), d_qkv32.data(), B, N, H, D, scale);
  bam::cpu::attention_forward<double>(qkv.data(), out.data(), probs.data(), B, N, H, D, scale);
  bam::cpu::attention_backward<double>(qkv.data(), probs.data(), d_out.data(), d_qkv.data(), B, N, H, D, scale);
  const std::string shape =
      "B=" + std::to_string(B) + " N=" + std::to_string(N) + " H=" + std::to_string(H) + " D=" + std::to_string(D);
  CAPTURE(shape);
  // f32 inputs rounded from the f64 ones; sums of N or D products: a few hundred float ulps at most.
  CHECK(worst(probs32, probs, 1e-6, 1e-4) <= 1.0);
  CHECK(worst(out32, out, 1e-5, 1e-4) <= 1.0);
  CHECK(worst(d_qkv32, d_qkv, 1e-5, 1e-4) <= 1.0);
  // Every softmax row sums to 1.
  double off = 0;
  for (int64_t row = 0; row < B * H * N; ++row) {
    double total = 0;
    for (int64_t j = 0; j < N; ++j) total += probs32[static_cast<size_t>(row * N + j)];
    if (!(std::abs(total - 1.0) <= off)) off = std::abs(total - 1.0);  // NaN stays
  }
  CHECK(off < 1e-5);
}

TEST_CASE("attention kernels: f32 (AVX-512 per head where the CPU has it) equal the f64 loop, forward and backward") {
  MESSAGE("f32 attention path: ", bam::cpu::cpu_has_avx512() ? "AVX-512 per-head kernels" : "the general GEMM");
  std::mt19937 rng(20261130);
  // This project's shapes: Fashion-MNIST (17 tokens, 4 heads of 32), ImageNet crops (37 and 197
  // tokens, heads of 64); then the edges: one token, a whole vector, one past it, two tiles
  // and one past, a row count that is not a multiple of 4, odd head sizes.
  check_attention(3, 17, 4, 32, rng);
  check_attention(2, 37, 2, 64, rng);
  check_attention(1, 197, 1, 64, rng);
  for (int64_t N : {1, 2, 5, 16, 17, 32, 33, 63})
    for (int64_t D : {1, 8, 20, 33}) check_attention(2, N, 2, D, rng);
}

TEST_CASE("attention kernels: the same results on one thread and on two") {
  std::mt19937 rng(7);
  const int64_t B = 4, N = 17, H = 4, D = 32, C = H * D;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> qkv(static_cast<size_t>(B * N * 3 * C)), d_out(static_cast<size_t>(B * N * C));
  for (float& x : qkv) x = normal(rng);
  for (float& x : d_out) x = normal(rng);
  std::vector<float> results[2];
  const int before = bam::cpu::num_threads();
  for (int threads : {1, 2}) {
    bam::cpu::set_num_threads(threads);
    std::vector<float> out(d_out.size()), probs(static_cast<size_t>(B * H * N * N)), d_qkv(qkv.size());
    bam::cpu::attention_forward<float>(qkv.data(), out.data(), probs.data(), B, N, H, D, 0.125);
    bam::cpu::attention_backward<float>(qkv.data(), probs.data(), d_out.data(), d_qkv.data(), B, N, H, D, 0.125);
    results[threads - 1] = out;
    results[threads - 1].insert(results[threads - 1].end(), d_qkv.begin(), d_qkv.end());
  }
  bam::cpu::set_num_threads(before);
  CHECK(results[0] == results[1]);
}

}  // namespace
