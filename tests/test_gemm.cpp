// Tests for kernels/cpu/gemm: every kernel, transpose combination and edge case against a
// double-precision triple loop.
//
// Shape letters: C is M x N, the reduction runs over K. "op(A)" is A or its transpose.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "tests/doctest_text.h"

namespace {

using bam::cpu::gemm_batched_f32;
using bam::cpu::gemm_batched_f64;
using bam::cpu::gemm_f32;
using bam::cpu::gemm_f64;

constexpr uint32_t kSeed = 20240611;

struct GemmCase {
  bool trans_a = false;
  bool trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  double alpha = 1.0;
  double beta = 0.0;
  int64_t extra_ld = 0;  // added to every leading dimension beyond the minimum
};

std::string describe(const GemmCase& c) {
  return std::string(c.trans_a ? "T" : "N") + (c.trans_b ? "T" : "N") +
         " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         " alpha=" + std::to_string(c.alpha) + " beta=" + std::to_string(c.beta) +
         " extra_ld=" + std::to_string(c.extra_ld);
}

// Operands of one GEMM, stored as the kernel sees them (with padding columns that hold junk).
template <typename T>
struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<T> A, B, C;  // C holds the input C; with beta == 0 it is all NaN
};

template <typename T>
Operands<T> make_operands(const GemmCase& c, std::mt19937& rng) {
  Operands<T> op;
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  op.lda = a_cols + c.extra_ld;
  op.ldb = b_cols + c.extra_ld;
  op.ldc = c.N + c.extra_ld;
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  op.A.resize(static_cast<size_t>(a_rows * op.lda));
  op.B.resize(static_cast<size_t>(b_rows * op.ldb));
  op.C.resize(static_cast<size_t>(c.M * op.ldc));
  for (T& x : op.A) x = static_cast<T>(dist(rng));
  for (T& x : op.B) x = static_cast<T>(dist(rng));
  for (T& x : op.C) {
    x = c.beta == 0.0 ? std::numeric_limits<T>::quiet_NaN() : static_cast<T>(dist(rng));
  }
  return op;
}

// The exact answer (in double) and, per element, the scale sum_k |alpha a_ik b_kj| + |beta c_ij|
// that rounding errors are proportional to.
struct Expected {
  std::vector<double> value, scale;
};

template <typename T>
Expected reference_gemm(const GemmCase& c, const Operands<T>& op) {
  Expected e;
  e.value.assign(static_cast<size_t>(c.M * c.N), 0.0);
  e.scale.assign(static_cast<size_t>(c.M * c.N), 0.0);
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double sum = 0.0, scale = 0.0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = c.trans_a ? op.A[k * op.lda + i] : op.A[i * op.lda + k];
        const double b = c.trans_b ? op.B[j * op.ldb + k] : op.B[k * op.ldb + j];
        sum += a * b;
        scale += std::abs(a * b);
      }
      double value = c.alpha * sum;
      scale *= std::abs(c.alpha);
      if (c.beta != 0.0) {
        value += c.beta * op.C[i * op.ldc + j];
        scale += std::abs(c.beta * op.C[i * op.ldc + j]);
      }
      e.value[i * c.N + j] = value;
      e.scale[i * c.N + j] = scale;
    }
  }
  return e;
}

// Tolerance: a sum of K products rounded in precision eps is off by at most about
// (K + 2) * eps * sum|terms| (the classic worst-case bound for recursive summation; +2 covers
// the alpha and beta steps), whatever the blocking or FMA use. With entries uniform in (-1, 1),
// sum|terms| ~ K/4, so the bound is ~ K^2 eps / 4 while a single missing or doubled product (the
// typical indexing bug) is ~ 1/4: caught as long as K^2 eps << 1, i.e. K up to ~1000 in f32.
template <typename T>
double tolerance(int64_t K, double scale) {
  return (static_cast<double>(K) + 2.0) * std::numeric_limits<T>::epsilon() * scale + 1e-30;
}

// Number of elements of `got` (row stride ldc) that miss the expected values; reports the first.
template <typename T>
int64_t count_mismatches(const GemmCase& c, const std::vector<T>& got, int64_t ldc,
                         const Expected& expected) {
  int64_t bad = 0;
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      const double g = got[i * ldc + j];
      const double want = expected.value[i * c.N + j];
      const double tol = tolerance<T>(c.K, expected.scale[i * c.N + j]);
      if (!(std::abs(g - want) <= tol)) {  // also catches NaN
        if (bad == 0) {
          MESSAGE(describe(c), ": first mismatch at (", i, ", ", j, "): got ", g, " want ", want,
                  " tol ", tol);
        }
        ++bad;
      }
    }
  }
  return bad;
}

template <typename T>
std::vector<T> run_gemm(const GemmCase& c, const Operands<T>& op) {
  std::vector<T> C = op.C;
  if constexpr (sizeof(T) == 4) {
    gemm_f32(c.trans_a, c.trans_b, c.M, c.N, c.K, static_cast<float>(c.alpha), op.A.data(), op.lda,
             op.B.data(), op.ldb, static_cast<float>(c.beta), C.data(), op.ldc);
  } else {
    gemm_f64(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, op.A.data(), op.lda, op.B.data(), op.ldb,
             c.beta, C.data(), op.ldc);
  }
  return C;
}

// Padding columns of C (j >= N) must come back exactly as they went in.
template <typename T>
bool padding_untouched(const GemmCase& c, const std::vector<T>& before, const std::vector<T>& after,
                       int64_t ldc) {
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = c.N; j < ldc; ++j) {
      const T x = before[i * ldc + j], y = after[i * ldc + j];
      if (!(x == y || (std::isnan(x) && std::isnan(y)))) return false;
    }
  }
  return true;
}

// Sizes around the micro-tiles (12x32, 6x16, 4x8), the packing step of 8 and the K slice (kc comes from
// the L1 size: 256..512 on current CPUs); the small ones (M N K up to 32,768) take the unpacked path
// (a row tail past a whole vector, and attention's per-head products of 17 tokens). The last five
// are packed, with every edge tile of the 12-row kernel not met above: 6, 7, 9, 10 and 11 rows.
std::vector<GemmCase> shape_cases() {
  const int64_t shapes[][3] = {
      {1, 1, 1},      {2, 5, 7},     {7, 17, 63},   {63, 65, 100}, {100, 257, 65}, {257, 63, 17},
      {65, 100, 257}, {17, 1, 257},  {1, 257, 100}, {5, 7, 2},     {6, 16, 8},     {12, 32, 385},
      {100, 48, 800}, {200, 33, 31}, {31, 200, 1},  {3, 45, 20},   {17, 17, 32},   {17, 32, 17},
      {24, 64, 9},    {25, 96, 130}, {18, 49, 75},  {19, 40, 57},  {21, 95, 33},   {22, 48, 41},
      {23, 33, 47},
  };
  std::vector<GemmCase> cases;
  for (const auto& s : shapes) {
    for (int t = 0; t < 4; ++t) {
      GemmCase c;
      c.trans_a = t & 1;
      c.trans_b = t & 2;
      c.M = s[0];
      c.N = s[1];
      c.K = s[2];
      cases.push_back(c);
    }
  }
  // Scalars and strides, spread over the transpose combinations.
  for (size_t i = 0; i < cases.size(); ++i) {
    cases[i].alpha = (i % 3 == 0) ? 1.0 : (i % 3 == 1 ? -0.75 : 1.5);
    cases[i].beta = (i % 4 == 0) ? 0.0 : (i % 4 == 1 ? 0.5 : (i % 4 == 2 ? 1.0 : -2.0));
    cases[i].extra_ld = (i % 5 == 0) ? 0 : static_cast<int64_t>(i % 7 + 1);
  }
  return cases;
}

// Runs every case with the current kernel and thread settings, in precision T.
template <typename T>
void check_all_shapes(std::mt19937& rng) {
  for (const GemmCase& c : shape_cases()) {
    const Operands<T> op = make_operands<T>(c, rng);
    const Expected expected = reference_gemm(c, op);
    const std::vector<T> got = run_gemm(c, op);
    CHECK_MESSAGE(count_mismatches(c, got, op.ldc, expected) == 0, describe(c));
    CHECK_MESSAGE(padding_untouched(c, op.C, got, op.ldc), describe(c));
  }
}

// Restores the default kernel choice and the thread count when a test ends.
struct KernelAndThreadsGuard {
  int threads = bam::cpu::num_threads();
  ~KernelAndThreadsGuard() {
    bam::cpu::gemm_force_kernel(nullptr);
    bam::cpu::set_num_threads(threads);
  }
};

}  // namespace

TEST_CASE("gemm: the tolerance rejects a result missing one product") {
  std::mt19937 rng(kSeed);
  MESSAGE("seed ", kSeed);
  GemmCase c;
  c.M = 3, c.N = 4, c.K = 1000, c.beta = 0.0;
  Operands<float> op = make_operands<float>(c, rng);
  op.A[1 * op.lda + 500] = 0.5f;  // a product of typical size (uniform entries: |a b| ~ 1/4)
  op.B[500 * op.ldb + 2] = 0.5f;
  const Expected expected = reference_gemm(c, op);
  std::vector<float> got = run_gemm(c, op);
  CHECK(count_mismatches(c, got, op.ldc, expected) == 0);
  got[1 * op.ldc + 2] -= 0.25f;
  CHECK(count_mismatches(c, got, op.ldc, expected) == 1);
}

TEST_CASE("gemm_f32: every kernel, all transposes, odd sizes, strides, alpha and beta") {
  KernelAndThreadsGuard guard;
  std::mt19937 rng(kSeed + 1);
  MESSAGE("seed ", kSeed + 1);
  for (const char* kernel : {"avx512", "avx2", "portable"}) {
    REQUIRE(bam::cpu::gemm_force_kernel(kernel));
    const std::string name = bam::cpu::gemm_kernel_name();
    MESSAGE("kernel ", name);
    if (std::strcmp(kernel, "portable") == 0) CHECK(name.rfind("portable", 0) == 0);
    for (int threads : {1, 3}) {
      bam::cpu::set_num_threads(threads);
      check_all_shapes<float>(rng);
    }
  }
}

TEST_CASE("gemm_f32: problems big enough to be threaded and blocked") {
  KernelAndThreadsGuard guard;
  std::mt19937 rng(kSeed + 2);
  MESSAGE("seed ", kSeed + 2);
  // Several row blocks and K slices; short-and-wide ones that split columns across threads; the
  // last has a packed B (K x N) over the 2M-float budget, so it is packed in two rounds.
  // All are above the size (4M multiply-adds) from which GEMM uses the thread pool.
  const GemmCase cases[] = {
      {false, true, 701, 130, 900, 1.0, 0.0, 3},   {true, false, 400, 97, 1100, 0.5, 1.0, 0},
      {false, false, 20, 1000, 400, 1.0, 0.25, 1}, {true, true, 301, 301, 401, -1.0, 0.0, 5},
      {false, true, 50, 2048, 1100, 1.0, 0.5, 0},
  };
  for (const char* kernel : {"avx512", "avx2", "portable"}) {
    REQUIRE(bam::cpu::gemm_force_kernel(kernel));
    for (const GemmCase& c : cases) {
      const Operands<float> op = make_operands<float>(c, rng);
      const Expected expected = reference_gemm(c, op);
      bam::cpu::set_num_threads(1);
      const std::vector<float> serial = run_gemm(c, op);
      CHECK_MESSAGE(count_mismatches(c, serial, op.ldc, expected) == 0, describe(c));
      // The partition never changes which products meet in which order, so any thread count
      // must give the very same bits.
      for (int threads : {2, 3, 4}) {
        bam::cpu::set_num_threads(threads);
        const std::vector<float> threaded = run_gemm(c, op);
        CHECK_MESSAGE(
            std::memcmp(threaded.data(), serial.data(), serial.size() * sizeof(float)) == 0,
            describe(c), " threads=", threads);
      }
    }
  }
}

TEST_CASE("gemm: K == 0 scales C by beta, M or N == 0 touches nothing") {
  {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> C = {nan, nan, nan, 7.0f, nan, nan};  // 2 x 2 with ldc 3
    const float A[1] = {1.0f}, B[1] = {1.0f};
    gemm_f32(false, false, 2, 2, 0, 1.0f, A, 1, B, 2, 0.0f, C.data(), 3);
    CHECK(C[0] == 0.0f);
    CHECK(C[1] == 0.0f);
    CHECK(std::isnan(C[2]));  // padding
    CHECK(C[3] == 0.0f);
    CHECK(C[4] == 0.0f);
    std::vector<float> D = {1.0f, 2.0f, 3.0f, 4.0f};
    gemm_f32(true, true, 2, 2, 0, 1.0f, A, 1, B, 1, 0.5f, D.data(), 2);
    CHECK(D == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
    gemm_f32(false, false, 0, 2, 3, 1.0f, A, 3, B, 2, 0.0f, D.data(), 2);
    gemm_f32(false, false, 2, 0, 3, 1.0f, A, 3, B, 0, 0.0f, D.data(), 2);
    CHECK(D == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
    std::vector<double> E = {1.0, 2.0};
    const double Ad[1] = {1.0}, Bd[1] = {1.0};
    gemm_f64(false, false, 1, 2, 0, 1.0, Ad, 1, Bd, 2, -1.0, E.data(), 2);
    CHECK(E == std::vector<double>{-1.0, -2.0});
  }
}

TEST_CASE("gemm_f64: all transposes, odd sizes, strides, alpha and beta") {
  KernelAndThreadsGuard guard;
  std::mt19937 rng(kSeed + 3);
  MESSAGE("seed ", kSeed + 3);
  for (int threads : {1, 2}) {
    bam::cpu::set_num_threads(threads);
    check_all_shapes<double>(rng);
  }
}

// Batched: matrices sit `gap` elements apart beyond their own size; the gaps must survive.
template <typename T>
void check_batched(const char* kernel, int threads, int64_t batch, const GemmCase& c,
                   std::mt19937& rng) {
  KernelAndThreadsGuard guard;
  REQUIRE(bam::cpu::gemm_force_kernel(kernel));
  bam::cpu::set_num_threads(threads);
  const int64_t gap = 5;
  std::vector<Operands<T>> each;
  for (int64_t i = 0; i < batch; ++i) each.push_back(make_operands<T>(c, rng));
  const int64_t stride_a = static_cast<int64_t>(each[0].A.size()) + gap;
  const int64_t stride_b = static_cast<int64_t>(each[0].B.size()) + gap;
  const int64_t stride_c = static_cast<int64_t>(each[0].C.size()) + gap;
  const T sentinel = T(12345);
  std::vector<T> A(batch * stride_a, sentinel), B(batch * stride_b, sentinel),
      C(batch * stride_c, sentinel);
  for (int64_t i = 0; i < batch; ++i) {
    std::copy(each[i].A.begin(), each[i].A.end(), A.begin() + i * stride_a);
    std::copy(each[i].B.begin(), each[i].B.end(), B.begin() + i * stride_b);
    std::copy(each[i].C.begin(), each[i].C.end(), C.begin() + i * stride_c);
  }
  const Operands<T>& first = each[0];
  if constexpr (sizeof(T) == 4) {
    gemm_batched_f32(c.trans_a, c.trans_b, batch, c.M, c.N, c.K, static_cast<float>(c.alpha),
                     A.data(), first.lda, stride_a, B.data(), first.ldb, stride_b,
                     static_cast<float>(c.beta), C.data(), first.ldc, stride_c);
  } else {
    gemm_batched_f64(c.trans_a, c.trans_b, batch, c.M, c.N, c.K, c.alpha, A.data(), first.lda,
                     stride_a, B.data(), first.ldb, stride_b, c.beta, C.data(), first.ldc,
                     stride_c);
  }
  for (int64_t i = 0; i < batch; ++i) {
    const std::vector<T> got(C.begin() + i * stride_c,
                             C.begin() + i * stride_c + static_cast<int64_t>(first.C.size()));
    CHECK_MESSAGE(count_mismatches(c, got, first.ldc, reference_gemm(c, each[i])) == 0, describe(c),
                  " batch item ", i, " kernel ", kernel, " threads ", threads);
    for (int64_t g = 0; g < gap; ++g) {
      REQUIRE(C[i * stride_c + first.C.size() + g] == sentinel);
    }
  }
}

TEST_CASE("gemm_batched: strided batches, spread over threads or threaded inside") {
  std::mt19937 rng(kSeed + 4);
  MESSAGE("seed ", kSeed + 4);
  // Attention-like many small matrices, tiny ones (the unpacked path: attention's per-head products
  // at 17 tokens), and a few large ones (threaded inside each GEMM).
  const GemmCase small{false, true, 50, 50, 32, 0.125, 0.0, 0};
  const GemmCase small_values{false, false, 50, 32, 50, 1.0, 1.0, 2};
  const GemmCase tiny{false, true, 17, 17, 32, 0.125, 0.0, 0};
  const GemmCase tiny_transposed{true, false, 17, 32, 17, 1.0, -0.5, 3};
  const GemmCase large{true, false, 300, 90, 500, -0.5, 0.5, 1};
  for (const char* kernel : {"avx512", "avx2", "portable"}) {
    for (int threads : {1, 2}) {
      check_batched<float>(kernel, threads, 37, small, rng);
      check_batched<float>(kernel, threads, 8, small_values, rng);
      check_batched<float>(kernel, threads, 37, tiny, rng);
      check_batched<float>(kernel, threads, 37, tiny_transposed, rng);
      check_batched<float>(kernel, threads, 3, large, rng);
    }
  }
  check_batched<double>("auto", 2, 9, small, rng);
  check_batched<double>("auto", 2, 3, large, rng);
}

TEST_CASE("gemm_force_kernel: names") {
  KernelAndThreadsGuard guard;
  CHECK_FALSE(bam::cpu::gemm_force_kernel("no-such-kernel"));
  REQUIRE(bam::cpu::gemm_force_kernel("portable"));
  CHECK(std::string(bam::cpu::gemm_kernel_name()) == "portable 4x8");
  // "auto" (and "avx512") is the widest kernel the CPU has, unless BAM_CPU_AVX512 or BAM_CPU_AVX2
  // turns it off; "avx2" is AVX2 on an AVX-512 CPU too.
  const std::string widest = bam::cpu::cpu_has_avx512()     ? "avx512 12x32"
                             : bam::cpu::cpu_has_avx2_fma() ? "avx2-fma 6x16"
                                                            : "portable 4x8";
  for (const char* name : {"auto", "avx512"}) {
    REQUIRE(bam::cpu::gemm_force_kernel(name));
    CHECK(std::string(bam::cpu::gemm_kernel_name()) == widest);
  }
  REQUIRE(bam::cpu::gemm_force_kernel("avx2"));
  CHECK(std::string(bam::cpu::gemm_kernel_name()) ==
        (bam::cpu::cpu_has_avx2_fma() ? "avx2-fma 6x16" : "portable 4x8"));
  MESSAGE("this CPU: AVX2/FMA ", bam::cpu::cpu_has_avx2_fma() ? "yes" : "no", ", AVX-512F ",
          bam::cpu::cpu_has_avx512() ? "yes" : "no");
}
