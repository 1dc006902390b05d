// gemm_f32_bf16: the f32 GEMM with bf16-rounded operands (gemm.h): on AMX tiles or with AVX-512
// BF16's pair dot products when the CPU has them (both from the same packed operands, driven
// here), else as its specification: round copies of both operands, then the f32 GEMM.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/scratch_buffer.h"

namespace bam::cpu {
namespace {

// The kernels that multiply packed operands, and the rounded copies (the specification).
enum class Bf16Kernel { amx, dot, rounded };
enum class Bf16Choice { automatic, dot, rounded };  // what gemm_bf16_force_kernel asked for
std::atomic<Bf16Choice> g_forced{Bf16Choice::automatic};

// The kernel for problems large enough to pack (the forced one where the CPU has it).
Bf16Kernel chosen_kernel() {
  const Bf16Choice forced = g_forced.load(std::memory_order_acquire);
  if (forced == Bf16Choice::rounded) return Bf16Kernel::rounded;
  if (forced == Bf16Choice::automatic && cpu_has_amx_bf16()) return Bf16Kernel::amx;
  return cpu_has_avx512_bf16() ? Bf16Kernel::dot : Bf16Kernel::rounded;
}

float round_to_bf16(float x) { return bf16_bits_to_float(float_to_bf16_bits(x)); }

// The rows x cols stored block at src (row stride ld), rounded, into dst (row stride cols).
void round_block(const float* src, int64_t ld, int64_t rows, int64_t cols, float* dst) {
  const auto run = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < cols; ++j) dst[r * cols + j] = round_to_bf16(src[r * ld + j]);
    }
  };
  const int64_t grain = std::max<int64_t>(1, 64 * 1024 / std::max<int64_t>(1, cols));
  parallel_for(rows, grain, run);
}

void rounded_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // The stored shapes: A is M x K (K x M when trans_a), B is K x N (N x K when trans_b).
  const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  thread_local std::vector<float> a, b;  // grow-only scratch of this thread
  a.resize(std::max(a.size(), static_cast<size_t>(a_rows * a_cols)));
  b.resize(std::max(b.size(), static_cast<size_t>(b_rows * b_cols)));
  round_block(A, lda, a_rows, a_cols, a.data());
  round_block(B, ldb, b_rows, b_cols, b.data());
  gemm_f32(trans_a, trans_b, M, N, K, alpha, a.data(), a_cols, b.data(), b_cols, beta, C, ldc);
}

// GELU of the stored rows x cols block at src (row stride ld) into dst, compact (row stride cols),
// by the GELU loop in use (gelu_erf_forward_f32). Returns the new row stride.
int64_t gelu_copy(const float* src, int64_t ld, int64_t rows, int64_t cols, std::vector<float>& dst) {
  dst.resize(static_cast<size_t>(rows * cols));
  float* out = dst.data();
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) gelu_erf_forward_f32(src + r * ld, out + r * cols, cols);
  });
  return std::max<int64_t>(cols, 1);
}

#ifndef BAM_NO_AVX512BF16  // (defined when the compiler cannot build the *_avx512bf16.cpp files)
// Below this many multiply-adds the packing costs more than it saves.
constexpr int64_t kPackedMinWork = 32 * 1024;

// The packed kernel for this problem, or rounded for the rounded copies (always for an empty one).
Bf16Kernel packed_kernel(int64_t M, int64_t N, int64_t K) {
  return M * N * K > kPackedMinWork ? chosen_kernel() : Bf16Kernel::rounded;
}

// Per-thread packed operands, in bf16.
thread_local ScratchBuffer<uint16_t> t_packed_a;
thread_local ScratchBuffer<uint16_t> t_packed_b;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Packed op(B) of one K slice kept at once: 512 Ki bf16 values (1 MiB), within a core's L2 on the CPUs that
// have AMX (2 MiB), so that every row block rereads it from there rather than from memory. (On AMD's
// Zen 5, with 1 MiB of L2 a core, half that measured no faster for the dot products.)
constexpr int64_t kPackedBBudget = 512 * 1024;

// The packed GEMM (the layouts are in gemm.h), on AMX tiles or with pair dot products (`kernel`).
// K is cut into slices whose packed op(B) fits kPackedBBudget; per slice, op(B) is packed by all
// threads, then each task packs its 32-row block of op(A) for the slice and multiplies it with a
// run of B's 32-column panels, adding into C (beta applies to the first slice only, as in gemm.cpp).
// With `bias` (alpha and beta 1), the first slice starts from it instead of from C. With `a_sums`
// (trans_a; ceil(M / 32) * 32 doubles, zero), op(A)'s rows are summed while they are packed: by the
// first column chunk's task of each row block, slice after slice, so k stays in order. gelu_a /
// gelu_b: the operand is GELU of the stored values, applied while it is packed.
void packed_gemm(Bf16Kernel kernel, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, const float* bias, float* C,
                 int64_t ldc, double* a_sums, bool gelu_a, bool gelu_b) {
  constexpr int64_t kBlock = 32, kStep = 32, kTile = 512;
  const int64_t panels = ceil_div(N, kBlock);
  const int64_t row_blocks = ceil_div(M, kBlock);
  const int threads = in_parallel_region() ? 1 : num_threads();
  // Equal slices of whole 32-deep steps, as deep as the budget allows.
  // (At least 16 steps, 512 deep: a wide op(B) would otherwise cut K so thin that loading and
  // storing C for every slice cost more than reading its packed B from L3.)
  const int64_t budget_steps = std::max<int64_t>(16, kPackedBBudget / (panels * 2 * kTile));
  const int64_t slices = ceil_div(ceil_div(K, kStep), budget_steps);
  const int64_t depth = ceil_div(ceil_div(K, kStep), slices) * kStep;

  // Row blocks, and when there are too few of them for the threads, runs of panels too.
  const int64_t column_chunks =
      row_blocks >= 4 * threads ? 1 : std::min<int64_t>(panels, ceil_div(4 * threads, row_blocks));
  const int64_t panels_per_chunk = ceil_div(panels, column_chunks);
  const int num_tasks = static_cast<int>(row_blocks * column_chunks);
  uint16_t* packed_b = t_packed_b.get(panels * ceil_div(depth, kStep) * 2 * kTile);

  for (int64_t k0 = 0; k0 < K; k0 += depth) {
    const int64_t kc = std::min(depth, K - k0);
    const int64_t steps = ceil_div(kc, kStep);
    const float* b_slice = trans_b ? B + k0 : B + k0 * ldb;
    const float* a_slice = trans_a ? A + k0 * lda : A + k0;
    const float slice_beta = k0 == 0 ? beta : 1.0f;
    const float* slice_bias = k0 == 0 ? bias : nullptr;
    const auto pack_b = [&](int64_t begin, int64_t end) {
      gemm_detail::bf16_pack_b(trans_b, b_slice, ldb, N, kc, begin, end, packed_b, gelu_b);
    };
    if (threads > 1) {
      parallel_for(panels * steps, 16, pack_b);
    } else {
      pack_b(0, panels * steps);
    }
    const auto run_task = [&](int task) {
      const int64_t block = task / column_chunks, chunk = task % column_chunks;
      const int64_t panel_begin = chunk * panels_per_chunk;
      const int64_t panel_end = std::min(panels, panel_begin + panels_per_chunk);
      if (panel_begin >= panel_end) return;
      uint16_t* packed_a = t_packed_a.get(steps * 2 * kTile);
      gemm_detail::bf16_pack_a(trans_a, a_slice, lda, M, kc, block * kBlock, packed_a,
                               a_sums && chunk == 0 ? a_sums + block * kBlock : nullptr, gelu_a);
#ifndef BAM_NO_AMX  // (defined when the compiler cannot build gemm_amx.cpp)
      if (kernel == Bf16Kernel::amx) {
        gemm_detail::amx_multiply_panels(packed_a, packed_b, M, N, kc, block * kBlock, panel_begin, panel_end, alpha,
                                         slice_beta, slice_bias, C, ldc);
        return;
      }
#endif
      gemm_detail::dot_multiply_panels(packed_a, packed_b, M, N, kc, block * kBlock, panel_begin, panel_end, alpha,
                                       slice_beta, slice_bias, C, ldc);
    };
    if (threads > 1) {
      parallel_tasks(num_tasks, run_task);
    } else {
      for (int task = 0; task < num_tasks; ++task) run_task(task);
    }
  }
}
#endif

}  // namespace

void gemm_f32_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0 || K <= 0 || alpha == 0.0f) {
    gemm_f32(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);  // C = beta * C
    return;
  }
#ifndef BAM_NO_AVX512BF16
  if (const Bf16Kernel kernel = packed_kernel(M, N, K); kernel != Bf16Kernel::rounded) {
    packed_gemm(kernel, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, nullptr, C, ldc, nullptr, false, false);
    return;
  }
#endif
  rounded_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_f32_bf16_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                        const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc, bool gelu_a) {
#ifndef BAM_NO_AVX512BF16
  if (const Bf16Kernel kernel = packed_kernel(M, N, K); kernel != Bf16Kernel::rounded) {
    packed_gemm(kernel, trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, bias ? 1.0f : 0.0f, bias, C, ldc, nullptr,
                gelu_a, false);
    return;
  }
#endif
  // The specification: GELU of A first (a copy), every row starting as the bias, and the product
  // added on top.
  if (gelu_a) {
    std::vector<float> activated;
    const int64_t cols = gelu_copy(A, lda, trans_a ? K : M, trans_a ? M : K, activated);
    gemm_f32_bf16_bias(trans_a, trans_b, M, N, K, activated.data(), cols, B, ldb, bias, C, ldc, false);
    return;
  }
  if (bias) {
    parallel_for(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) std::copy(bias, bias + N, C + r * ldc);
    });
  }
  gemm_f32_bf16(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, bias ? 1.0f : 0.0f, C, ldc);
}

void gemm_f32_bf16_bias_grad(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                             const float* B, int64_t ldb, float* C, int64_t ldc, float* row_sums, bool gelu_b) {
#ifndef BAM_NO_AVX512BF16
  if (const Bf16Kernel kernel = trans_a ? packed_kernel(M, N, K) : Bf16Kernel::rounded; kernel != Bf16Kernel::rounded) {
    thread_local std::vector<double> sums;  // grow-only scratch of this thread
    sums.assign(static_cast<size_t>(ceil_div(M, 32) * 32), 0.0);
    packed_gemm(kernel, trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, nullptr, C, ldc, sums.data(), false,
                gelu_b);
    for (int64_t m = 0; m < M; ++m) row_sums[m] = static_cast<float>(sums[static_cast<size_t>(m)]);
    return;
  }
#endif
  if (gelu_b) {
    // The specification: GELU of B first (a copy).
    std::vector<float> activated;
    const int64_t cols = gelu_copy(B, ldb, trans_b ? N : K, trans_b ? K : N, activated);
    gemm_f32_bf16_bias_grad(trans_a, trans_b, M, N, K, A, lda, activated.data(), cols, C, ldc, row_sums, false);
    return;
  }
  // The specification: the product, then each row of op(A) summed in order in double. A stored
  // [K, M] block of more than one column is what reduce's column sums take (the kernel behind
  // sum(g, {0})); one column would be reduce's row sum, in four interleaved lanes, so it and any
  // other layout are summed k by k into each task's run of rows.
  gemm_f32_bf16(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
  if (trans_a && lda == M && M > 1) {
    reduce<float>(ReduceOp::sum, A, row_sums, 1, K, M);
    return;
  }
  const int64_t m_stride = trans_a ? 1 : lda, k_stride = trans_a ? lda : 1;  // op(A)(m, k)'s place
  parallel_for(M, 64, [&](int64_t begin, int64_t end) {
    std::vector<double> sums(static_cast<size_t>(end - begin), 0.0);
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t m = begin; m < end; ++m) sums[static_cast<size_t>(m - begin)] += A[m * m_stride + k * k_stride];
    }
    for (int64_t m = begin; m < end; ++m) row_sums[m] = static_cast<float>(sums[static_cast<size_t>(m - begin)]);
  });
}

void gemm_batched_f32_bf16(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                           const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                           float beta, float* C, int64_t ldc, int64_t stride_c) {
  const auto one = [&](int64_t i) {
    gemm_f32_bf16(trans_a, trans_b, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
                  C + i * stride_c, ldc);
  };
  // Many products: one per task; a few: each threaded inside (as gemm_batched_f32 does).
  if (!in_parallel_region() && num_threads() > 1 && batch >= 4 * num_threads()) {
    parallel_for(batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) one(i);
    });
  } else {
    for (int64_t i = 0; i < batch; ++i) one(i);
  }
}

const char* gemm_bf16_kernel_name() {
  switch (chosen_kernel()) {
    case Bf16Kernel::amx: return "amx-bf16 32x32";
    case Bf16Kernel::dot: return "avx512-bf16 8x32";
    case Bf16Kernel::rounded: break;
  }
  static thread_local std::string name;
  name = std::string("rounded copies + ") + gemm_kernel_name();
  return name.c_str();
}

bool gemm_bf16_force_kernel(const char* name) {
  if (!name || std::strcmp(name, "auto") == 0 || std::strcmp(name, "amx") == 0) {
    g_forced.store(Bf16Choice::automatic, std::memory_order_release);
    return true;
  }
  if (std::strcmp(name, "avx512bf16") == 0) {
    g_forced.store(Bf16Choice::dot, std::memory_order_release);
    return true;
  }
  if (std::strcmp(name, "rounded") == 0) {
    g_forced.store(Bf16Choice::rounded, std::memory_order_release);
    return true;
  }
  return false;
}

}  // namespace bam::cpu
