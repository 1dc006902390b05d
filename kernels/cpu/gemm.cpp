// GEMM driver: kernel choice, cache blocking and packing, threading, plus the f64 and batched
// paths. The AVX2 micro-kernel lives in gemm_avx2.cpp; a portable one is defined here.
//
// Blocking (BLIS-style), with mr x nr the micro-kernel tile and kc, mc from the cache sizes:
//   - K is cut into slices of depth kc. op(B) is packed into nr-wide column micro-panels
//     (kc x nr, k-major), shared by all threads; one micro-panel stays in L1 while the
//     micro-kernel sweeps the rows of an A block against it. B is packed a group of slices at
//     a time (at most kPackedBBudget floats), so it is reread from cache, not memory.
//   - op(A) is packed per task: a block of at most mc rows x kc (in L2) as mr-row micro-panels.
//   - Tasks are (row block) x (column chunk). Tall problems split only rows, so nothing is
//     packed twice; problems with few rows split columns instead.
#include "kernels/cpu/gemm.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/scratch_buffer.h"

namespace bam::cpu {
namespace {

using gemm_detail::MicroKernelF32;

// ---------------------------------------------------------------------------------------------
// Portable micro-kernel: plain C++ the compiler can vectorise for any target.

constexpr int kPortableRows = 4;
constexpr int kPortableCols = 8;

void portable_multiply_tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                            float alpha, float beta, int rows, int cols) {
  // Fully unrolled constant loops let the compiler keep acc in (SIMD) registers.
  float acc[kPortableRows][kPortableCols] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* b_row = b + k * kPortableCols;
#pragma GCC unroll 8
    for (int r = 0; r < kPortableRows; ++r) {
      const float a_value = a[k * kPortableRows + r];
#pragma GCC unroll 8
      for (int j = 0; j < kPortableCols; ++j) acc[r][j] += a_value * b_row[j];
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* c_row = c + r * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < cols; ++j) c_row[j] = alpha * acc[r][j];
    } else {
      for (int j = 0; j < cols; ++j) c_row[j] = alpha * acc[r][j] + beta * c_row[j];
    }
  }
}

// Packs `lanes` (rows of op(A) or columns of op(B)) into micro-panels `width` lanes wide,
// k-major, zero-padding the last panel. Lane i at step k is src[i * lane_stride + k * k_stride].
void portable_pack(const float* src, int64_t lane_stride, int64_t k_stride, int64_t lanes,
                   int64_t kc, int width, float* dst) {
  for (int64_t lane0 = 0; lane0 < lanes; lane0 += width, dst += width * kc) {
    const int64_t panel_lanes = std::min<int64_t>(width, lanes - lane0);
    const float* panel_src = src + lane0 * lane_stride;
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t i = 0; i < width; ++i) {
        dst[k * width + i] = i < panel_lanes ? panel_src[i * lane_stride + k * k_stride] : 0.0f;
      }
    }
  }
}

void portable_pack_a(bool trans, const float* src, int64_t ld, int64_t rows, int64_t kc,
                     float* dst) {
  portable_pack(src, trans ? 1 : ld, trans ? ld : 1, rows, kc, kPortableRows, dst);
}

void portable_pack_b(bool trans, const float* src, int64_t ld, int64_t cols, int64_t kc,
                     float* dst) {
  portable_pack(src, trans ? ld : 1, trans ? 1 : ld, cols, kc, kPortableCols, dst);
}

// The unpacked i-k-j loop (direct_gemm_rows, below).
void portable_direct(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

const MicroKernelF32 kPortableKernel{"portable 4x8",         kPortableRows,   kPortableCols,
                                     portable_multiply_tile, portable_pack_a, portable_pack_b,
                                     portable_direct};

// ---------------------------------------------------------------------------------------------
// Kernel choice: decided once (CPU check + BAM_GEMM_KERNEL), overridable by gemm_force_kernel.

const MicroKernelF32* kernel_for_name(const char* name) {
  const bool want_portable = std::strcmp(name, "portable") == 0;
  const bool want_avx2 = std::strcmp(name, "avx2") == 0;
  const bool want_best = std::strcmp(name, "auto") == 0 || std::strcmp(name, "avx512") == 0;
  if (!want_portable && !want_avx2 && !want_best) return nullptr;
  if (want_best && cpu_has_avx512()) return &gemm_detail::avx512_micro_kernel_f32();
  if ((want_best || want_avx2) && cpu_has_avx2_fma()) return &gemm_detail::avx2_micro_kernel_f32();
  return &kPortableKernel;
}

std::atomic<const MicroKernelF32*> g_forced_kernel{nullptr};

const MicroKernelF32& active_kernel() {
  if (const MicroKernelF32* forced = g_forced_kernel.load(std::memory_order_acquire)) {
    return *forced;
  }
  static const MicroKernelF32* from_environment = [] {
    const char* env = std::getenv("BAM_GEMM_KERNEL");
    const MicroKernelF32* kernel = env ? kernel_for_name(env) : nullptr;
    return kernel ? kernel : kernel_for_name("auto");
  }();
  return *from_environment;
}

// ---------------------------------------------------------------------------------------------
// Block sizes follow the data caches of the machine (read once):
//   kc: the B micro-panel (kc x nr floats) fills ~2/3 of L1d, the rest is for the A micro-panel
//       streaming past it: on a 48 KiB L1d (Zen 5) kc = 256 for the AVX-512 12x32 kernel and 512
//       for the AVX2 6x16 one; 168 and 336 on 32 KiB.
//   mc: the A block (mc x kc floats) takes ~1/4 of L2, leaving room for the C rows and the B
//       panels passing through, in whole micro-kernel rows: 252 (AVX-512) or 126 (AVX2) rows on
//       a 1 MiB L2.
// Both measured best (within noise) among kc 256..768 and mc 72..336 on Zen 5.
struct CacheSizes {
  int64_t l1d_bytes = 32 * 1024;
  int64_t l2_bytes = 512 * 1024;
};

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes = [] {
    CacheSizes s;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l1 >= 16 * 1024 && l1 <= 1024 * 1024) s.l1d_bytes = l1;
    if (l2 >= 128 * 1024 && l2 <= 64 * 1024 * 1024) s.l2_bytes = l2;
#endif
    return s;
  }();
  return sizes;
}

int64_t max_depth(const MicroKernelF32& kernel) {
  const int64_t kc = cache_sizes().l1d_bytes * 2 / 3 / (kernel.nr * int64_t{sizeof(float)});
  return std::clamp<int64_t>(kc / 8 * 8, 128, 1024);
}

int64_t max_block_rows(const MicroKernelF32& kernel, int64_t depth) {
  const int64_t mc = cache_sizes().l2_bytes / 4 / (depth * int64_t{sizeof(float)});
  return std::max<int64_t>(kernel.mr, mc / kernel.mr * kernel.mr);
}

// Packed op(B) kept at once (floats): 8 MiB, within the L3 of current server CPUs, so each task
// rereads it from cache; deeper problems are done in several rounds of (pack B, multiply).
constexpr int64_t kPackedBBudget = 2 * 1024 * 1024;
// Below this many multiply-adds packing costs more than it saves: use the direct loop.
constexpr int64_t kDirectLoopMaxWork = 32 * 1024;
// Below this many multiply-adds one thread is quicker than waking the pool.
constexpr int64_t kSerialMaxWork = 4 * 1024 * 1024;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
int64_t round_up(int64_t a, int64_t multiple) {
  return ceil_div(a, multiple) * multiple;
}

// Per-thread packed operands.
thread_local ScratchBuffer<float> t_packed_a;
thread_local ScratchBuffer<float> t_packed_b;

// Slack after a packed buffer: the AVX2 packers may store up to 8 floats past the last panel (the
// AVX-512 ones store nothing past it).
constexpr int64_t kPackSlack = 16;

template <typename T>
void scale_matrix(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    T* c_row = C + i * ldc;
    if (beta == T(0)) {
      std::fill(c_row, c_row + N, T(0));
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < N; ++j) c_row[j] *= beta;
    }
  }
}

// Unpacked i-k-j loop for rows [row_begin, row_end): for tiny problems and for the f64 path.
template <typename T>
void direct_gemm_rows(bool trans_a, bool trans_b, int64_t row_begin, int64_t row_end, int64_t N,
                      int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
                      T* C, int64_t ldc) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    T* c_row = C + i * ldc;
    scale_matrix<T>(1, N, beta, c_row, ldc);
    for (int64_t k = 0; k < K; ++k) {
      const T a_value = alpha * (trans_a ? A[k * lda + i] : A[i * lda + k]);
      if (trans_b) {
        for (int64_t j = 0; j < N; ++j) c_row[j] += a_value * B[j * ldb + k];
      } else {
        const T* b_row = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) c_row[j] += a_value * b_row[j];
      }
    }
  }
}

void portable_direct(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  direct_gemm_rows<float>(trans_a, trans_b, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// How one packed GEMM is cut into tasks: row blocks (runs of A micro-panels, at most mc rows)
// times column chunks (runs of B micro-panels).
struct GemmPlan {
  int64_t depth;          // kc of every K slice but possibly the last
  int64_t row_panels;     // ceil(M / mr)
  int64_t row_blocks;     // block b holds A micro-panels [b * row_panels / row_blocks, ...)
  int64_t panels;         // ceil(N / nr)
  int64_t column_chunks;  // tasks per row block
};

GemmPlan make_plan(const MicroKernelF32& kernel, int64_t M, int64_t N, int64_t K, int threads) {
  GemmPlan plan{};
  // Equal K slices no deeper than max_depth, so the last one is not a short remnant.
  const int64_t deepest = max_depth(kernel);
  const int64_t depth_slices = ceil_div(K, deepest);
  plan.depth = std::min(round_up(ceil_div(K, depth_slices), 8), deepest);
  plan.row_panels = ceil_div(M, kernel.mr);
  plan.row_blocks = ceil_div(plan.row_panels, max_block_rows(kernel, plan.depth) / kernel.mr);
  plan.panels = ceil_div(N, kernel.nr);
  plan.column_chunks = 1;
  if (threads > 1 && plan.row_panels >= 4 * threads) {
    // Row blocks of equal size (to one micro-panel), their count a multiple of the thread
    // count so that every thread gets the same share.
    plan.row_blocks = std::min(round_up(plan.row_blocks, threads), plan.row_panels);
  } else if (threads > 1) {
    // Too few rows to share: split the columns (each chunk packs the small A block itself).
    plan.column_chunks = std::min<int64_t>(ceil_div(threads, plan.row_blocks), plan.panels);
  }
  return plan;
}

// The packed GEMM: K > 0, alpha != 0.
void packed_gemm_f32(const MicroKernelF32& kernel, bool trans_a, bool trans_b, int64_t M, int64_t N,
                     int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                     int64_t ldb, float beta, float* C, int64_t ldc) {
  const int threads = (in_parallel_region() || M * N * K <= kSerialMaxWork) ? 1 : num_threads();
  const GemmPlan plan = make_plan(kernel, M, N, K, threads);
  const int64_t mr = kernel.mr;
  const int64_t nr = kernel.nr;
  const int64_t padded_n = plan.panels * nr;
  // K slices are handled in groups whose packed B fits kPackedBBudget: pack the group's B (all
  // threads), then every task multiplies against it while it is still in cache.
  const int64_t group_depth =
      std::min(K, std::max<int64_t>(1, kPackedBBudget / (plan.depth * padded_n)) * plan.depth);
  float* packed_b = t_packed_b.get(group_depth * padded_n + kPackSlack);
  const int64_t panels_per_chunk = ceil_div(plan.panels, plan.column_chunks);
  const int num_tasks = static_cast<int>(plan.row_blocks * plan.column_chunks);

  for (int64_t group_k0 = 0; group_k0 < K; group_k0 += group_depth) {
    const int64_t group_k1 = std::min(K, group_k0 + group_depth);
    // Slice s of the group (K rows from k0 = group_k0 + s * depth) starts at
    // (k0 - group_k0) * padded_n; within it, micro-panel j starts at j * kc * nr.
    const auto pack_b_panels = [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t k0 = group_k0 + (item / plan.panels) * plan.depth;
        const int64_t panel = item % plan.panels;
        const int64_t kc = std::min(plan.depth, group_k1 - k0);
        const int64_t j0 = panel * nr;
        const float* src = trans_b ? B + j0 * ldb + k0 : B + k0 * ldb + j0;
        kernel.pack_b(trans_b, src, ldb, std::min(nr, N - j0), kc,
                      packed_b + (k0 - group_k0) * padded_n + panel * kc * nr);
      }
    };
    const int64_t num_panels = ceil_div(group_k1 - group_k0, plan.depth) * plan.panels;
    if (threads > 1) {
      // Chunks of at least ~256 KiB of packed B, so that a small B is packed by one thread.
      parallel_for(num_panels, std::max<int64_t>(1, 64 * 1024 / (plan.depth * nr)), pack_b_panels);
    } else {
      pack_b_panels(0, num_panels);
    }

    // Each task packs its A block slice by slice and sweeps its B micro-panels.
    const auto run_task = [&](int task) {
      const int64_t row_block = task / plan.column_chunks;
      const int64_t chunk = task % plan.column_chunks;
      const int64_t i0 = row_block * plan.row_panels / plan.row_blocks * mr;
      const int64_t rows =
          std::min(M, (row_block + 1) * plan.row_panels / plan.row_blocks * mr) - i0;
      const int64_t panel_begin = chunk * panels_per_chunk;
      const int64_t panel_end = std::min(plan.panels, panel_begin + panels_per_chunk);
      float* packed_a = t_packed_a.get(round_up(rows, mr) * plan.depth + kPackSlack);
      for (int64_t k0 = group_k0; k0 < group_k1; k0 += plan.depth) {
        const int64_t kc = std::min(plan.depth, group_k1 - k0);
        kernel.pack_a(trans_a, trans_a ? A + k0 * lda + i0 : A + i0 * lda + k0, lda, rows, kc,
                      packed_a);
        const float slice_beta = k0 == 0 ? beta : 1.0f;
        for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
          const float* b_panel = packed_b + (k0 - group_k0) * padded_n + panel * kc * nr;
          const int64_t j0 = panel * nr;
          const int64_t cols = std::min(nr, N - j0);
          for (int64_t r0 = 0; r0 < rows; r0 += mr) {
            kernel.multiply_tile(kc, packed_a + r0 * kc, b_panel, C + (i0 + r0) * ldc + j0, ldc,
                                 alpha, slice_beta, static_cast<int>(std::min(mr, rows - r0)),
                                 static_cast<int>(cols));
          }
        }
      }
    };
    parallel_tasks(num_tasks, run_task);
  }
}

constexpr int64_t kPrefetchMaxFloats = 16 * 1024;

void prefetch_span(const float* begin, int64_t num_floats) {
  for (int64_t i = 0; i < num_floats; i += 16) __builtin_prefetch(begin + i);
}

// Threads share a batch when it splits evenly or is large; otherwise each GEMM is threaded.
bool spread_batch_over_threads(int64_t batch) {
  if (in_parallel_region()) return false;
  const int threads = num_threads();
  return threads > 1 && (batch % threads == 0 || batch >= 4 * threads);
}

}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_matrix<float>(M, N, beta, C, ldc);
    return;
  }
  const MicroKernelF32& kernel = active_kernel();
  if (M * N * K <= kDirectLoopMaxWork) {
    kernel.direct(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  packed_gemm_f32(kernel, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_f64(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
              const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
              int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0) {
    scale_matrix<double>(M, N, beta, C, ldc);
    return;
  }
  // Rows are independent; each chunk walks K in slices so a slice of B stays cached across rows.
  constexpr int64_t kSliceDepth = 64;
  constexpr int64_t kRowBlock = 32;
  const auto rows = [&](int64_t row_begin, int64_t row_end) {
    for (int64_t i0 = row_begin; i0 < row_end; i0 += kRowBlock) {
      const int64_t i1 = std::min(row_end, i0 + kRowBlock);
      for (int64_t k0 = 0; k0 < K; k0 += kSliceDepth) {
        const int64_t kc = std::min(kSliceDepth, K - k0);
        const double* a_slice = trans_a ? A + k0 * lda : A + k0;
        const double* b_slice = trans_b ? B + k0 : B + k0 * ldb;
        direct_gemm_rows<double>(trans_a, trans_b, i0, i1, N, kc, alpha, a_slice, lda, b_slice, ldb,
                                 k0 == 0 ? beta : 1.0, C, ldc);
      }
    }
  };
  const int64_t grain = std::max<int64_t>(1, kSerialMaxWork / std::max<int64_t>(1, N * K));
  parallel_for(M, grain, rows);
}

void gemm_batched_f32(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                      int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc,
                      int64_t stride_c) {
  // Small matrices are latency-bound on their first touch: fetch the next item's operands while
  // this one is multiplied.
  const int64_t a_span = ((trans_a ? K : M) - 1) * lda + (trans_a ? M : K);
  const int64_t b_span = ((trans_b ? N : K) - 1) * ldb + (trans_b ? K : N);
  const bool prefetch_next = a_span + b_span <= kPrefetchMaxFloats;
  const auto one = [&](int64_t i) {
    if (prefetch_next && i + 1 < batch) {
      prefetch_span(A + (i + 1) * stride_a, a_span);
      prefetch_span(B + (i + 1) * stride_b, b_span);
    }
    gemm_f32(trans_a, trans_b, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
             C + i * stride_c, ldc);
  };
  if (batch <= 0) return;
  if (spread_batch_over_threads(batch)) {
    parallel_for(batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) one(i);
    });
  } else {
    for (int64_t i = 0; i < batch; ++i) one(i);
  }
}

void gemm_batched_f64(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      double alpha, const double* A, int64_t lda, int64_t stride_a, const double* B,
                      int64_t ldb, int64_t stride_b, double beta, double* C, int64_t ldc,
                      int64_t stride_c) {
  const auto one = [&](int64_t i) {
    gemm_f64(trans_a, trans_b, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
             C + i * stride_c, ldc);
  };
  if (batch <= 0) return;
  if (spread_batch_over_threads(batch)) {
    parallel_for(batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) one(i);
    });
  } else {
    for (int64_t i = 0; i < batch; ++i) one(i);
  }
}

const char* gemm_kernel_name() {
  return active_kernel().name;
}

bool gemm_force_kernel(const char* name) {
  if (!name) {
    g_forced_kernel.store(nullptr, std::memory_order_release);
    return true;
  }
  const MicroKernelF32* kernel = kernel_for_name(name);
  if (!kernel) return false;
  g_forced_kernel.store(kernel, std::memory_order_release);
  return true;
}

}  // namespace bam::cpu
