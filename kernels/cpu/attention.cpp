// Attention kernels: per (batch, head), three small GEMMs that read q, k, v in place from the
// packed qkv rows (leading dimension 3C) and a row softmax; no permuted copies of q/k/v. This
// loop through the general GEMM is the specification; f32 on a CPU with AVX-512 takes the
// per-head kernels of attention_avx512.cpp instead (the same products, blocked for these sizes).
#include "kernels/cpu/attention.h"

#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/softmax.h"

namespace bam::cpu {
namespace {

// Whether f32 attention takes the AVX-512 per-head kernels.
bool use_avx512_heads() {
  static const bool use = cpu_has_avx512();
  return use;
}

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else gemm_f64(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Runs head(b, h, scratch) for every (batch, head) pair on the thread pool, each task with the
// scratch buffer of the AVX-512 per-head kernels.
template <typename Head>
void for_each_head_avx512(int64_t B, int64_t N, int64_t H, int64_t D, const Head& head) {
  parallel_for(B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(attention_detail::avx512_scratch_floats(N, D)));
    for (int64_t bh = begin; bh < end; ++bh) head(bh / H, bh % H, scratch.data());
  });
}

}  // namespace

template <typename T>
void attention_forward(const T* qkv, T* out, T* probs, int64_t B, int64_t N, int64_t H, int64_t D, double scale) {
  const int64_t C = H * D, row = 3 * C;
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx512_heads()) {
      for_each_head_avx512(B, N, H, D, [&](int64_t b, int64_t h, float* scratch) {
        const float* q = qkv + b * N * row + h * D;
        attention_detail::forward_head_avx512(q, q + C, q + 2 * C, row, out + b * N * C + h * D, C,
                                              probs + (b * H + h) * N * N, N, D, static_cast<float>(scale), scratch);
      });
      return;
    }
  }
  parallel_for(B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* q = qkv + b * N * row + h * D;
      const T* k = q + C;
      const T* v = q + 2 * C;
      T* p = probs + bh * N * N;
      gemm<T>(false, true, N, N, D, static_cast<T>(scale), q, row, k, row, T(0), p, N);
      softmax_forward<T>(p, p, N, N);
      gemm<T>(false, false, N, D, N, T(1), p, N, v, row, T(0), out + b * N * C + h * D, C);
    }
  });
}

template <typename T>
void attention_backward(const T* qkv, const T* probs, const T* d_out, T* d_qkv, int64_t B, int64_t N, int64_t H,
                        int64_t D, double scale) {
  const int64_t C = H * D, row = 3 * C;
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx512_heads()) {
      for_each_head_avx512(B, N, H, D, [&](int64_t b, int64_t h, float* scratch) {
        const float* q = qkv + b * N * row + h * D;
        float* dq = d_qkv + b * N * row + h * D;
        attention_detail::backward_head_avx512(q, q + C, q + 2 * C, row, probs + (b * H + h) * N * N,
                                               d_out + b * N * C + h * D, C, dq, dq + C, dq + 2 * C, N, D,
                                               static_cast<float>(scale), scratch);
      });
      return;
    }
  }
  parallel_for(B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> d_scores(N * N);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* q = qkv + b * N * row + h * D;
      const T* k = q + C;
      const T* v = q + 2 * C;
      const T* p = probs + bh * N * N;
      const T* go = d_out + b * N * C + h * D;
      T* dq = d_qkv + b * N * row + h * D;
      T* dk = dq + C;
      T* dv = dq + 2 * C;
      // dP = dO V^T, then the softmax backward gives dS; scale folds into dS.
      gemm<T>(false, true, N, N, D, T(1), go, C, v, row, T(0), d_scores.data(), N);
      softmax_backward<T>(p, d_scores.data(), d_scores.data(), N, N);
      for (auto& x : d_scores) x *= static_cast<T>(scale);
      gemm<T>(false, false, N, D, N, T(1), d_scores.data(), N, k, row, T(0), dq, row);  // dQ = dS K
      gemm<T>(true, false, N, D, N, T(1), d_scores.data(), N, q, row, T(0), dk, row);   // dK = dS^T Q
      gemm<T>(true, false, N, D, N, T(1), p, N, go, C, T(0), dv, row);                  // dV = P^T dO
    }
  });
}

template void attention_forward<float>(const float*, float*, float*, int64_t, int64_t, int64_t, int64_t, double);
template void attention_forward<double>(const double*, double*, double*, int64_t, int64_t, int64_t, int64_t, double);
template void attention_backward<float>(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t,
                                        int64_t, double);
template void attention_backward<double>(const double*, const double*, const double*, double*, int64_t, int64_t,
                                         int64_t, int64_t, double);

}  // namespace bam::cpu
