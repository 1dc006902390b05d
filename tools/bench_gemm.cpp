// bench_gemm: times bam's f32 GEMM on the transformer's shapes and, when built with OpenBLAS
// (BAM_HAVE_OPENBLAS), the same calls through cblas_sgemm; prints one table row per shape.
// With --bf16 "ours" is gemm_f32_bf16 (bf16-rounded operands: AMX or AVX-512 BF16 when the CPU has
// it), still against OpenBLAS's f32 sgemm.
//
// Shapes are M x N x K (C is M x N); 12544 = 64 images x 196 tokens, 384 channels, 1152 = qkv
// width, 1536 = MLP width; 4352 = 256 images x 17 tokens and 128 channels is the README's job.
// Usage: bench_gemm [--threads N] [--quick] [--kernel NAME] [--bf16]
//   --kernel: the f32 kernel (auto, avx512, avx2, portable), or with --bf16 the bf16 one (auto, amx,
//   avx512bf16, rounded).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

#ifdef BAM_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace {

struct Shape {
  const char* what;
  bool trans_a;
  bool trans_b;
  int64_t batch;  // > 1: a batched GEMM (OpenBLAS runs it as a loop of single calls)
  int64_t M, N, K;
};

const Shape kAllShapes[] = {
    {"square", false, false, 1, 1024, 1024, 1024},          {"qkv forward", false, true, 1, 12544, 1152, 384},
    {"qkv d_input", false, false, 1, 12544, 384, 1152},     {"mlp fc1 forward", false, true, 1, 12544, 1536, 384},
    {"mlp fc2 forward", false, true, 1, 12544, 384, 1536},  {"mlp fc1 d_input", false, false, 1, 12544, 384, 1536},
    {"mlp fc1 d_weight", true, false, 1, 1536, 384, 12544}, {"qkv d_weight", true, false, 1, 1152, 384, 12544},
    {"attn scores", false, true, 1024, 50, 50, 32},         {"attn values", false, false, 1024, 50, 32, 50},
    {"small fc1 forward", false, true, 1, 4352, 512, 128},  {"small fc1 d_weight", true, false, 1, 512, 128, 4352},
    {"small fc2 d_weight", true, false, 1, 128, 512, 4352}, {"projector layer", false, true, 1, 512, 1024, 1024},
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

template <typename Fn>
double time_once(Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return seconds_since(start);
}

struct Operands {
  std::vector<float> A, B, C;
  int64_t lda, ldb, ldc;
};

Operands make_operands(const Shape& s, std::mt19937& rng) {
  Operands op;
  op.lda = s.trans_a ? s.M : s.K;
  op.ldb = s.trans_b ? s.K : s.N;
  op.ldc = s.N;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  op.A.resize(static_cast<size_t>(s.batch * s.M * s.K));
  op.B.resize(static_cast<size_t>(s.batch * s.K * s.N));
  op.C.resize(static_cast<size_t>(s.batch * s.M * s.N));
  for (float& x : op.A) x = dist(rng);
  for (float& x : op.B) x = dist(rng);
  return op;
}

bool g_bf16 = false;

void run_ours(const Shape& s, Operands& op) {
  if (g_bf16) {
    bam::cpu::gemm_batched_f32_bf16(s.trans_a, s.trans_b, s.batch, s.M, s.N, s.K, 1.0f, op.A.data(), op.lda, s.M * s.K,
                                    op.B.data(), op.ldb, s.K * s.N, 0.0f, op.C.data(), op.ldc, s.M * s.N);
    return;
  }
  bam::cpu::gemm_batched_f32(s.trans_a, s.trans_b, s.batch, s.M, s.N, s.K, 1.0f, op.A.data(),
                             op.lda, s.M * s.K, op.B.data(), op.ldb, s.K * s.N, 0.0f, op.C.data(),
                             op.ldc, s.M * s.N);
}

#ifdef BAM_HAVE_OPENBLAS
void run_openblas(const Shape& s, Operands& op) {
  for (int64_t i = 0; i < s.batch; ++i) {
    cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
                s.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(s.M), static_cast<int>(s.N),
                static_cast<int>(s.K), 1.0f, op.A.data() + i * s.M * s.K, static_cast<int>(op.lda),
                op.B.data() + i * s.K * s.N, static_cast<int>(op.ldb), 0.0f,
                op.C.data() + i * s.M * s.N, static_cast<int>(op.ldc));
  }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int threads = bam::cpu::num_threads();
  bool quick = false;
  const char* kernel = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--bf16") == 0) {
      g_bf16 = true;
    } else if (std::strcmp(argv[i], "--kernel") == 0 && i + 1 < argc) {
      kernel = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_gemm [--threads N] [--quick] [--kernel NAME] [--bf16]\n");
      return 2;
    }
  }
  if (kernel && !(g_bf16 ? bam::cpu::gemm_bf16_force_kernel(kernel) : bam::cpu::gemm_force_kernel(kernel))) {
    std::fprintf(stderr, "bench_gemm: unknown kernel '%s' (%s)\n", kernel,
                 g_bf16 ? "with --bf16: auto, amx, avx512bf16, rounded" : "auto, avx512, avx2, portable");
    return 2;
  }
  bam::cpu::set_num_threads(threads);
#ifdef BAM_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its new threads spin a while
#endif
  std::printf("bam gemm kernel: %s, threads: %d\n",
              g_bf16 ? bam::cpu::gemm_bf16_kernel_name() : bam::cpu::gemm_kernel_name(), threads);
  std::printf("%-17s %5s %5s %5s %5s %2s | %9s %8s | %9s %8s | %6s\n", "shape", "batch", "M", "N",
              "K", "op", "ours ms", "GFLOP/s", "blas ms", "GFLOP/s", "ratio");

  std::mt19937 rng(1234);
  const int num_shapes = quick ? 1 : static_cast<int>(std::size(kAllShapes));
  const int reps = quick ? 3 : 5;
  for (int i = 0; i < num_shapes; ++i) {
    const Shape& s = kAllShapes[i];
    Operands op = make_operands(s, rng);
    const double flops = 2.0 * static_cast<double>(s.batch * s.M) * s.N * s.K;
    // One library at a time: after a call OpenBLAS's threads spin for a while, which would steal
    // a core from ours if the two alternated. Rep 0 of each is the warm-up (page faults, thread
    // start, caches).
    std::vector<double> ours_times, blas_times;
    for (int r = 0; r <= reps; ++r) {
      const double t = time_once([&] { run_ours(s, op); });
      if (r > 0) ours_times.push_back(t);
    }
#ifdef BAM_HAVE_OPENBLAS
    for (int r = 0; r <= reps; ++r) {
      const double t = time_once([&] { run_openblas(s, op); });
      if (r > 0) blas_times.push_back(t);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let its threads go idle
#endif
    const double ours = median(ours_times);
    const std::string trans = std::string(s.trans_a ? "T" : "N") + (s.trans_b ? "T" : "N");
    std::printf("%-17s %5lld %5lld %5lld %5lld %2s | %9.3f %8.1f |", s.what,
                static_cast<long long>(s.batch), static_cast<long long>(s.M),
                static_cast<long long>(s.N), static_cast<long long>(s.K), trans.c_str(), ours * 1e3,
                flops / ours * 1e-9);
#ifdef BAM_HAVE_OPENBLAS
    const double blas = median(blas_times);
    std::printf(" %9.3f %8.1f | %6.2f\n", blas * 1e3, flops / blas * 1e-9, blas / ours);
#else
    std::printf(" %9s %8s | %6s\n", "-", "-", "-");
#endif
    std::fflush(stdout);
  }
  return 0;
}
