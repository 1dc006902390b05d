// Tests for gemm_f32_bf16 (kernels/cpu/gemm.h): the f32 GEMM with bf16-rounded operands, on AMX
// tiles, with AVX-512 BF16's pair dot products and as rounded copies through gemm_f32, each where
// the CPU has it, against a double-precision loop over the rounded
// operands; and its linear-layer forms (the bias, the bias gradient, GELU of an operand) against
// the separate operations they replace, bit for bit.
//
// Shape letters: C is M x N, the reduction runs over K.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "tests/bit_compare.h"
#include "tests/doctest_text.h"

namespace {

using bam::cpu::gemm_f32_bf16;

constexpr uint32_t kSeed = 20261129;

struct Case {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1.0f, beta = 0.0f;
  int64_t extra_ld = 0;
};

std::string describe(const Case& c) {
  return std::string(c.trans_a ? "T" : "N") + (c.trans_b ? "T" : "N") + " M=" + std::to_string(c.M) +
         " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + " extra_ld=" + std::to_string(c.extra_ld);
}

float rounded(float x) { return bam::bf16_bits_to_float(bam::float_to_bf16_bits(x)); }

struct Problem {
  int64_t lda, ldb, ldc;
  std::vector<float> A, B, C;
};

// Operands as stored (padding columns hold junk); with beta == 0, C starts as NaN.
Problem make_problem(const Case& c, std::mt19937& rng) {
  Problem p;
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  p.lda = a_cols + c.extra_ld;
  p.ldb = b_cols + c.extra_ld;
  p.ldc = c.N + c.extra_ld;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  p.A.resize(static_cast<size_t>(a_rows * p.lda));
  p.B.resize(static_cast<size_t>(b_rows * p.ldb));
  p.C.resize(static_cast<size_t>(c.M * p.ldc));
  for (float& x : p.A) x = dist(rng);
  for (float& x : p.B) x = dist(rng);
  for (float& x : p.C) x = c.beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : dist(rng);
  return p;
}

std::vector<float> run(const Case& c, const Problem& p) {
  std::vector<float> C = p.C;
  gemm_f32_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, p.A.data(), p.lda, p.B.data(), p.ldb, c.beta, C.data(),
                p.ldc);
  return C;
}

// Mismatches against the exact product of the rounded operands. The products of two bf16 values
// are exact in f32, so only the f32 additions round: (K + 2) eps_f32 sum|terms| bounds them. An
// operand left unrounded is off by up to 2^-9 relative, ~ K/4 * 2^-9 in the sum: caught.
int64_t count_mismatches(const Case& c, const Problem& p, const std::vector<float>& got) {
  int64_t bad = 0;
  const double eps = std::numeric_limits<float>::epsilon();
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double sum = 0.0, scale = 0.0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = rounded(c.trans_a ? p.A[k * p.lda + i] : p.A[i * p.lda + k]);
        const double b = rounded(c.trans_b ? p.B[j * p.ldb + k] : p.B[k * p.ldb + j]);
        sum += a * b;
        scale += std::abs(a * b);
      }
      double want = c.alpha * sum;
      scale *= std::abs(c.alpha);
      if (c.beta != 0.0f) {
        want += double(c.beta) * p.C[i * p.ldc + j];
        scale += std::abs(double(c.beta) * p.C[i * p.ldc + j]);
      }
      const double tol = (double(c.K) + 2.0) * eps * scale + 1e-30;
      const double g = got[i * p.ldc + j];
      if (!(std::abs(g - want) <= tol)) {
        if (bad == 0) MESSAGE(describe(c), ": first mismatch at (", i, ", ", j, "): got ", g, " want ", want);
        ++bad;
      }
    }
    for (int64_t j = c.N; j < p.ldc; ++j) {  // padding columns come back as they went in
      const float x = p.C[i * p.ldc + j], y = got[i * p.ldc + j];
      if (!(x == y || (std::isnan(x) && std::isnan(y)))) ++bad;
    }
  }
  return bad;
}

// Around the AMX tiles (16 rows, 32 along K) and blocks (32 x 32): every edge of a block, K below,
// at and past one tile step (odd K leaves half a bf16 pair), and problems small enough for the
// rounded copies even with AMX (up to 32,768 multiply-adds).
std::vector<Case> cases() {
  const int64_t shapes[][3] = {
      {1, 1, 1},    {5, 7, 3},     {16, 16, 32},  {32, 32, 32},  {33, 31, 33},  {17, 47, 64},   {48, 17, 95},
      {64, 64, 31}, {15, 100, 65}, {100, 15, 2},  {70, 130, 97}, {129, 33, 1},  {31, 200, 160}, {96, 96, 96},
      {4, 300, 45}, {300, 4, 45},  {40, 50, 200}, {2, 2, 1000},  {65, 65, 129}, {16, 33, 17},
  };
  std::vector<Case> out;
  for (const auto& s : shapes) {
    for (int t = 0; t < 4; ++t) {
      Case c;
      c.trans_a = t & 1;
      c.trans_b = t & 2;
      c.M = s[0];
      c.N = s[1];
      c.K = s[2];
      out.push_back(c);
    }
  }
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].alpha = i % 3 == 0 ? 1.0f : (i % 3 == 1 ? -0.75f : 1.5f);
    out[i].beta = i % 4 == 0 ? 0.0f : (i % 4 == 1 ? 0.5f : (i % 4 == 2 ? 1.0f : -2.0f));
    out[i].extra_ld = i % 5 == 0 ? 0 : static_cast<int64_t>(i % 7 + 1);
  }
  return out;
}

// The kernels to run: the rounded copies always, AVX-512 BF16's dot products and AMX when the CPU
// has them (said when it has not).
std::vector<const char*> kernels() {
  std::vector<const char*> names = {"rounded"};
  if (bam::cpu::cpu_has_avx512_bf16()) {
    names.push_back("avx512bf16");
  } else {
    MESSAGE(
        "no AVX-512 BF16 here (the CPU lacks it, BAM_CPU_AVX512BF16=0, or the compiler could not build it): the "
        "dot-product kernel is not tested");
  }
  if (bam::cpu::cpu_has_amx_bf16()) {
    names.push_back("amx");
  } else {
    MESSAGE("no AMX-BF16 here (the CPU lacks it, BAM_CPU_AMX=0, or the compiler could not build it): the AMX kernel is not tested");
  }
  return names;
}

struct Restore {
  int threads = bam::cpu::num_threads();
  ~Restore() {
    bam::cpu::gemm_bf16_force_kernel(nullptr);
    bam::cpu::set_num_threads(threads);
  }
};

}  // namespace

TEST_CASE("gemm_f32_bf16: every kernel, all transposes, tile edges, strides, alpha and beta") {
  Restore restore;
  std::mt19937 rng(kSeed);
  MESSAGE("seed ", kSeed);
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    MESSAGE("kernel ", bam::cpu::gemm_bf16_kernel_name());
    for (int threads : {1, 3}) {
      bam::cpu::set_num_threads(threads);
      for (const Case& c : cases()) {
        const Problem p = make_problem(c, rng);
        CHECK_MESSAGE(count_mismatches(c, p, run(c, p)) == 0, kernel, " threads=", threads, " ", describe(c));
      }
    }
  }
}

TEST_CASE("gemm_f32_bf16: the operands are rounded, to nearest even") {
  Restore restore;
  // bf16 keeps 7 fraction bits: near 1 its values are 1, 1 + 2^-7, 1 + 2^-6, ... A value halfway
  // between two of them goes to the one whose last bit is 0.
  const float tie_down = 1.0f + 0x1p-8f;          // tie: to the even neighbour 1
  const float tie_up = 1.0f + 0x1p-7f + 0x1p-8f;  // tie: to the even neighbour 1 + 2^-6
  const float below_tie = 1.0f + 0x1p-9f;         // rounds down to 1
  CHECK(rounded(tie_down) == 1.0f);
  CHECK(rounded(tie_up) == 1.0f + 0x1p-6f);
  CHECK(rounded(below_tie) == 1.0f);
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    // 64 x 64 x 64 is large enough for AMX. A holds the three values in its first column, B is
    // all ones in its first row and zero elsewhere, so C's first column is A's rounded column.
    const int64_t n = 64;
    std::vector<float> A(n * n, 0.0f), B(n * n, 0.0f), C(n * n, -1.0f);
    A[0 * n] = tie_down;
    A[1 * n] = tie_up;
    A[2 * n] = below_tie;
    A[3 * n] = -tie_up;
    for (int64_t j = 0; j < n; ++j) B[j] = 1.0f;
    gemm_f32_bf16(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
    CHECK_MESSAGE(C[0 * n] == 1.0f, kernel);
    CHECK_MESSAGE(C[1 * n] == 1.0f + 0x1p-6f, kernel);
    CHECK_MESSAGE(C[2 * n] == 1.0f, kernel);
    CHECK_MESSAGE(C[3 * n + 5] == -(1.0f + 0x1p-6f), kernel);
    // And B is rounded too.
    std::fill(A.begin(), A.end(), 0.0f);
    std::fill(B.begin(), B.end(), 0.0f);
    A[0] = 1.0f;
    B[7] = tie_up;
    gemm_f32_bf16(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
    CHECK_MESSAGE(C[7] == 1.0f + 0x1p-6f, kernel);
  }
}

TEST_CASE("gemm_f32_bf16: large problems, threaded, give the same bits on any thread count") {
  Restore restore;
  std::mt19937 rng(kSeed + 1);
  // Several row blocks and column chunks per thread; a K of many tile steps with a remnant; the
  // second and the last are cut into K slices by the AMX driver.
  const Case large[] = {
      {false, true, 1000, 130, 300, 1.0f, 0.0f, 3},
      {true, false, 128, 512, 1100, 1.0f, 1.0f, 0},
      {false, false, 40, 1000, 257, 0.5f, 0.25f, 1},
      {true, true, 301, 97, 401, -1.0f, 0.0f, 5},
      // Packed op(B) past the AMX driver's budget: K in three slices, alpha and beta through them.
      {true, false, 70, 600, 2000, -0.5f, 0.5f, 1},
      // And with alpha 1 and beta 0: C (NaN) is never read, the later slices add to the first.
      {false, true, 64, 600, 2100, 1.0f, 0.0f, 0},
  };
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    for (const Case& c : large) {
      const Problem p = make_problem(c, rng);
      bam::cpu::set_num_threads(1);
      const std::vector<float> serial = run(c, p);
      CHECK_MESSAGE(count_mismatches(c, p, serial) == 0, kernel, " ", describe(c));
      for (int threads : {2, 3, 4}) {
        bam::cpu::set_num_threads(threads);
        const std::vector<float> threaded = run(c, p);
        CHECK_MESSAGE(std::memcmp(threaded.data(), serial.data(), serial.size() * sizeof(float)) == 0, kernel,
                      " threads=", threads, " ", describe(c));
      }
    }
  }
}

TEST_CASE("gemm_batched_f32_bf16 and the kernel names") {
  Restore restore;
  std::mt19937 rng(kSeed + 2);
  const Case c{false, true, 40, 33, 70, 0.5f, 1.0f, 2};
  const int64_t batch = 3;
  std::vector<Problem> items;
  for (int64_t i = 0; i < batch; ++i) items.push_back(make_problem(c, rng));
  // Lay the three problems end to end with strides, then compare each with its single GEMM.
  const int64_t sa = items[0].A.size(), sb = items[0].B.size(), sc = items[0].C.size();
  std::vector<float> A, B, C;
  for (const Problem& p : items) {
    A.insert(A.end(), p.A.begin(), p.A.end());
    B.insert(B.end(), p.B.begin(), p.B.end());
    C.insert(C.end(), p.C.begin(), p.C.end());
  }
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    std::vector<float> out = C;
    bam::cpu::gemm_batched_f32_bf16(c.trans_a, c.trans_b, batch, c.M, c.N, c.K, c.alpha, A.data(), items[0].lda, sa,
                                    B.data(), items[0].ldb, sb, c.beta, out.data(), items[0].ldc, sc);
    for (int64_t i = 0; i < batch; ++i) {
      const std::vector<float> got(out.begin() + i * sc, out.begin() + (i + 1) * sc);
      CHECK_MESSAGE(count_mismatches(c, items[size_t(i)], got) == 0, kernel, " item ", i);
    }
  }
  CHECK_FALSE(bam::cpu::gemm_bf16_force_kernel("no-such-kernel"));
  REQUIRE(bam::cpu::gemm_bf16_force_kernel("rounded"));
  CHECK(std::string(bam::cpu::gemm_bf16_kernel_name()).rfind("rounded copies + ", 0) == 0);
  REQUIRE(bam::cpu::gemm_bf16_force_kernel(nullptr));
  const std::string rounded = std::string("rounded copies + ") + bam::cpu::gemm_kernel_name();
  CHECK(std::string(bam::cpu::gemm_bf16_kernel_name()) == (bam::cpu::cpu_has_amx_bf16()      ? "amx-bf16 32x32"
                                                           : bam::cpu::cpu_has_avx512_bf16() ? "avx512-bf16 8x32"
                                                                                             : rounded));
  REQUIRE(bam::cpu::gemm_bf16_force_kernel("avx512bf16"));
  CHECK(std::string(bam::cpu::gemm_bf16_kernel_name()) ==
        (bam::cpu::cpu_has_avx512_bf16() ? "avx512-bf16 8x32" : rounded));
  REQUIRE(bam::cpu::gemm_bf16_force_kernel(nullptr));
  MESSAGE("this CPU: AMX-BF16 ", bam::cpu::cpu_has_amx_bf16() ? "yes" : "no", ", AVX-512 BF16 ",
          bam::cpu::cpu_has_avx512_bf16() ? "yes" : "no");
}

TEST_CASE("gemm_f32_bf16_bias: the bits of filling C with the bias and adding the product (beta 1)") {
  Restore restore;
  std::mt19937 rng(kSeed + 3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  // Whole and edge tiles and blocks, the rounded copies' small problems, and K cut into slices
  // (the bias starts only the first); the linear layers' shapes (8704 x 384 x 128, 512 x 1024 x 1024).
  std::vector<Case> shapes = {
      {false, true, 8704, 384, 128, 1.0f, 1.0f, 0}, {false, true, 512, 1024, 1024, 1.0f, 1.0f, 0},
      {false, true, 33, 47, 65, 1.0f, 1.0f, 3},     {true, false, 70, 600, 2000, 1.0f, 1.0f, 1},
      {false, false, 5, 7, 3, 1.0f, 1.0f, 0},       {true, true, 100, 15, 2, 1.0f, 1.0f, 2},
      {false, true, 16, 16, 32, 1.0f, 1.0f, 0},     {false, true, 48, 17, 0, 1.0f, 1.0f, 0},
  };
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    for (int threads : {1, 2}) {
      bam::cpu::set_num_threads(threads);
      for (const Case& c : shapes) {
        const Problem p = make_problem(c, rng);
        std::vector<float> bias(static_cast<size_t>(c.N));
        for (float& b : bias) b = 10.0f * dist(rng);
        // The specification: C's rows (padding kept) start as the bias; product added with beta 1.
        std::vector<float> want = p.C;
        for (int64_t i = 0; i < c.M; ++i) std::copy(bias.begin(), bias.end(), want.begin() + i * p.ldc);
        gemm_f32_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 1.0f,
                      want.data(), p.ldc);
        // C starts as NaN: the bias path must not read it.
        std::vector<float> got(p.C.size(), std::numeric_limits<float>::quiet_NaN());
        for (int64_t i = 0; i < c.M; ++i) {
          for (int64_t j = c.N; j < p.ldc; ++j) got[i * p.ldc + j] = want[i * p.ldc + j];
        }
        bam::cpu::gemm_f32_bf16_bias(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, p.B.data(), p.ldb,
                                     bias.data(), got.data(), p.ldc);
        CHECK_MESSAGE(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0, kernel,
                      " threads=", threads, " ", describe(c));
        // And the specification itself is the product plus the bias.
        Problem with_bias = p;
        for (int64_t i = 0; i < c.M; ++i) std::copy(bias.begin(), bias.end(), with_bias.C.begin() + i * p.ldc);
        CHECK_MESSAGE(count_mismatches(c, with_bias, got) == 0, kernel, " ", describe(c));
      }
    }
  }
}

TEST_CASE("gemm_f32_bf16_bias_grad: the product's bits, and op(A)'s row sums in order in double") {
  Restore restore;
  std::mt19937 rng(kSeed + 4);
  // The linear layers' dW = g^T x (8704 rows of g); K cut into slices; M not a whole number of
  // blocks or tiles (5, 40, 130) and small enough for column chunks; odd K (a half bf16 pair);
  // the rounded copies' small problems; op(A) not transposed (the sums' own loop); one row of
  // op(A) (a [K, 1] block, which reduce would sum in four lanes).
  const Case shapes[] = {
      {true, false, 128, 128, 8704, 1.0f, 0.0f, 0}, {true, false, 40, 600, 2001, 1.0f, 0.0f, 1},
      {true, true, 130, 70, 333, 1.0f, 0.0f, 2},    {true, false, 5, 7, 3, 1.0f, 0.0f, 0},
      {false, false, 33, 47, 65, 1.0f, 0.0f, 3},    {true, false, 17, 300, 1, 1.0f, 0.0f, 0},
      {true, false, 1, 300, 2001, 1.0f, 0.0f, 0},   {true, false, 1, 8, 9, 1.0f, 0.0f, 0},
  };
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    for (int threads : {1, 2, 3}) {
      bam::cpu::set_num_threads(threads);
      for (const Case& c : shapes) {
        Problem p = make_problem(c, rng);
        // Every third row of op(A) starts with 2^40 and ends with -2^40: the double sum between
        // them keeps only what 2^40's ulp (2^-12) leaves of the small terms, so a sum in float, or
        // in another order, gives other bits.
        for (int64_t m = 0; m < c.M && c.K >= 2; m += 3) {
          p.A[c.trans_a ? m : m * p.lda] = 0x1p40f;
          p.A[c.trans_a ? (c.K - 1) * p.lda + m : m * p.lda + c.K - 1] = -0x1p40f;
        }
        const std::vector<float> want = run(c, p);
        std::vector<float> got = p.C;  // NaN: beta 0
        std::vector<float> sums(static_cast<size_t>(c.M), std::numeric_limits<float>::quiet_NaN());
        bam::cpu::gemm_f32_bf16_bias_grad(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, p.B.data(), p.ldb,
                                          got.data(), p.ldc, sums.data());
        CHECK_MESSAGE(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0, kernel,
                      " threads=", threads, " ", describe(c));
        int64_t wrong_sums = 0;
        for (int64_t m = 0; m < c.M; ++m) {
          double sum = 0.0;
          for (int64_t k = 0; k < c.K; ++k) sum += c.trans_a ? p.A[k * p.lda + m] : p.A[m * p.lda + k];
          const float expected = static_cast<float>(sum);
          wrong_sums += std::memcmp(&expected, &sums[static_cast<size_t>(m)], sizeof(float)) != 0;
        }
        CHECK_MESSAGE(wrong_sums == 0, kernel, " threads=", threads, " ", describe(c));
      }
    }
  }
}

// GELU of an operand inside the packing: the bits of the GELU loop's copy multiplied (the MLP's
// second layer, forward and weight gradient), on every layout of the operand.
TEST_CASE("gemm_f32_bf16_bias with gelu_a and gemm_f32_bf16_bias_grad with gelu_b: GELU's bits, then the product") {
  Restore restore;
  std::mt19937 rng(kSeed + 5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  // The engine's two uses (fc2 forward; its weight gradient, K in slices), every other layout,
  // and the rounded copies' small problems.
  const Case shapes[] = {
      {false, true, 8704, 128, 512, 1.0f, 0.0f, 0}, {true, false, 128, 512, 8704, 1.0f, 0.0f, 0},
      {true, false, 70, 600, 300, 1.0f, 0.0f, 1},   {false, false, 33, 47, 65, 1.0f, 0.0f, 3},
      {true, true, 100, 40, 33, 1.0f, 0.0f, 2},     {false, true, 5, 7, 3, 1.0f, 0.0f, 0},
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const char* kernel : kernels()) {
    REQUIRE(bam::cpu::gemm_bf16_force_kernel(kernel));
    for (int threads : {1, 3}) {
      bam::cpu::set_num_threads(threads);
      for (const Case& c : shapes) {
        Problem p = make_problem(c, rng);
        for (float& v : p.A) v = normal(rng);  // GELU's whole range, negative half included
        for (float& v : p.B) v = normal(rng);
        std::vector<float> bias(static_cast<size_t>(c.N));
        for (float& b : bias) b = normal(rng);
        // The specification: GELU's copies of the stored operands (padding included), then the product.
        std::vector<float> gelu_a(p.A.size()), gelu_b(p.B.size());
        bam::cpu::gelu_erf_forward_f32(p.A.data(), gelu_a.data(), static_cast<int64_t>(p.A.size()));
        bam::cpu::gelu_erf_forward_f32(p.B.data(), gelu_b.data(), static_cast<int64_t>(p.B.size()));
        for (const float* with_bias : {static_cast<const float*>(bias.data()), static_cast<const float*>(nullptr)}) {
          // C starts as NaN: neither form may read it.
          std::vector<float> want(p.C.size(), nan), got(p.C.size(), nan);
          bam::cpu::gemm_f32_bf16_bias(c.trans_a, c.trans_b, c.M, c.N, c.K, gelu_a.data(), p.lda, p.B.data(), p.ldb,
                                       with_bias, want.data(), p.ldc);
          bam::cpu::gemm_f32_bf16_bias(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, p.B.data(), p.ldb,
                                       with_bias, got.data(), p.ldc, true);
          CHECK_MESSAGE(bam::test::differing_bits(got, want) == 0, kernel, " threads=", threads, " gelu_a ",
                        with_bias ? "with" : "without", " bias ", describe(c));
        }
        std::vector<float> want(p.C.size(), nan), got(p.C.size(), nan);
        std::vector<float> want_sums(static_cast<size_t>(c.M)), got_sums(static_cast<size_t>(c.M));
        bam::cpu::gemm_f32_bf16_bias_grad(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, gelu_b.data(), p.ldb,
                                          want.data(), p.ldc, want_sums.data());
        bam::cpu::gemm_f32_bf16_bias_grad(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, p.B.data(), p.ldb,
                                          got.data(), p.ldc, got_sums.data(), true);
        CHECK_MESSAGE(bam::test::differing_bits(got, want) == 0, kernel, " threads=", threads, " gelu_b ", describe(c));
        CHECK_MESSAGE(bam::test::differing_bits(got_sums, want_sums) == 0, kernel, " gelu_b sums ", describe(c));
        // Without a bias it is gemm_f32_bf16 with beta 0; and GELU was applied: the plain product
        // differs.
        std::vector<float> plain(p.C.size(), nan), reference(p.C.size(), nan), activated(p.C.size(), nan);
        bam::cpu::gemm_f32_bf16_bias(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, p.B.data(), p.ldb, nullptr,
                                     plain.data(), p.ldc);
        gemm_f32_bf16(c.trans_a, c.trans_b, c.M, c.N, c.K, 1.0f, p.A.data(), p.lda, p.B.data(), p.ldb, 0.0f,
                      reference.data(), p.ldc);
        CHECK_MESSAGE(bam::test::differing_bits(plain, reference) == 0, kernel, " no bias ", describe(c));
        bam::cpu::gemm_f32_bf16_bias(c.trans_a, c.trans_b, c.M, c.N, c.K, p.A.data(), p.lda, p.B.data(), p.ldb, nullptr,
                                     activated.data(), p.ldc, true);
        CHECK_MESSAGE(bam::test::differing_bits(plain, activated) != 0, describe(c));
      }
    }
  }
}
