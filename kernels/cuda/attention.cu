// Flash-attention-style multi-head attention. Forward: each thread owns one query row, keeps q,
// the running max m, the running sum l and the output accumulator in registers, and streams keys
// and values through shared memory tile by tile (online softmax: when the max grows, what was
// accumulated is rescaled by exp(m_old - m_new)). It saves lse = m + log(l) per row. Backward
// recomputes p = exp(scale q.k - lse) instead of reading a stored N x N matrix:
//   delta_i = dO_i . O_i,  ds_ij = p_ij (dO_i . v_j - delta_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dO_i,
// with one kernel owning query rows (dq) and one owning key rows (dk, dv), so nothing is atomic.
// Head dims up to DM (16/32/64/128) are zero-padded to DM inside the kernel. These kernels serve
// f32 and f64; bf16 and f16 go to the tensor-core version in attention_tc.cu.
#include <cuda/std/limits>
#include <type_traits>

#include "engine/cuda_check.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_layout.cuh"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

constexpr int kRowsPerBlock = 64;  // query (or key) rows per block: one per thread

// Keys per shared-memory tile: 32 KiB of tiles for f32 at any head dim, within the 48 KiB limit.
template <typename C, int DM>
constexpr int tile_rows() {
  return (DM <= 64 ? 64 : 32) * 4 / int(sizeof(C));
}

// Loads rows [r0, r0 + TK) of one head from `src` (row offsets from `offset`) into tile[TK][DM],
// zero beyond N and beyond D.
template <typename S, typename C, int TK, int DM, typename Offset>
__device__ __forceinline__ void load_tile(C (*tile)[DM], const S* src, int64_t r0, int64_t N, int64_t D,
                                          Offset offset) {
  for (int e = threadIdx.x; e < TK * DM; e += blockDim.x) {
    int r = e / DM, d = e % DM;
    bool ok = r0 + r < N && d < D;
    tile[r][d] = ok ? C(Num<S>::load(src[offset(r0 + r) + d])) : C(0);
  }
}

template <typename S, int DM>
__global__ void __launch_bounds__(kRowsPerBlock)
    attention_forward_kernel(const S* qkv, S* out, typename Num<S>::Compute* lse, PackedQkv p, double scale) {
  using N_ = Num<S>;
  using C = typename N_::Compute;
  constexpr int TK = tile_rows<C, DM>();
  __shared__ C ks[TK][DM];
  __shared__ C vs[TK][DM];
  const GridBlock at = grid_block(p, blockDim.x);
  const int64_t b = at.b, h = at.h, i = at.row0 + threadIdx.x;
  const bool active = i < p.N;
  C q[DM], acc[DM];
#pragma unroll
  for (int d = 0; d < DM; ++d) {
    q[d] = active && d < p.D ? N_::load(qkv[p.q(b, i, h) + d]) * C(scale) : C(0);
    acc[d] = 0;
  }
  C m = -cuda::std::numeric_limits<C>::infinity(), l = 0;
  for (int64_t j0 = 0; j0 < p.N; j0 += TK) {
    __syncthreads();  // the previous tile is no longer read
    load_tile<S, C, TK, DM>(ks, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
    load_tile<S, C, TK, DM>(vs, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
    __syncthreads();
    if (!active) continue;
    const int tile = int(p.N - j0 < TK ? p.N - j0 : TK);
    for (int jj = 0; jj < tile; ++jj) {
      C s = 0;
#pragma unroll
      for (int d = 0; d < DM; ++d) s += q[d] * ks[jj][d];
      C m_new = s > m ? s : m;
      C correction = exp(m - m_new);  // 0 on the first key (m = -inf), 1 when the max holds
      C weight = exp(s - m_new);
      l = l * correction + weight;
#pragma unroll
      for (int d = 0; d < DM; ++d) acc[d] = acc[d] * correction + weight * vs[jj][d];
      m = m_new;
    }
  }
  if (!active) return;
  C inv = C(1) / l;
  // Unrolled over DM (constant indices keep the accumulators in registers), guarded by D.
#pragma unroll
  for (int d = 0; d < DM; ++d)
    if (d < p.D) out[p.o(b, i, h) + d] = N_::store(acc[d] * inv);
  lse[(b * p.H + h) * p.N + i] = m + log(l);
}

template <typename S>
__global__ void attention_probs_kernel(const S* qkv, const typename Num<S>::Compute* lse, S* probs, PackedQkv p,
                                       int64_t B, double scale) {
  using N_ = Num<S>;
  using C = typename N_::Compute;
  const int64_t total = B * p.H * p.N * p.N;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t j = t % p.N, i = (t / p.N) % p.N, bh = t / (p.N * p.N);
    int64_t b = bh / p.H, h = bh % p.H;
    C s = 0;
    for (int64_t d = 0; d < p.D; ++d) s += N_::load(qkv[p.q(b, i, h) + d]) * N_::load(qkv[p.k(b, j, h) + d]);
    probs[t] = N_::store(exp(s * C(scale) - lse[bh * p.N + i]));
  }
}

// delta[b, h, i] = dO_i . O_i, a warp per row: the lanes read the row's D values together
// (coalesced) and combine by shuffles.
template <typename S>
__global__ void attention_delta_kernel(const S* out, const S* d_out, typename Num<S>::Compute* delta, PackedQkv p,
                                       int64_t B) {
  using N_ = Num<S>;
  using C = typename N_::Compute;
  const int64_t total = B * p.H * p.N;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t t = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; t < total; t += warps) {
    const int64_t i = t % p.N, bh = t / p.N, b = bh / p.H, h = bh % p.H, row = p.o(b, i, h);
    C s = 0;
    for (int64_t d = lane; d < p.D; d += 32) s += N_::load(out[row + d]) * N_::load(d_out[row + d]);
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) delta[t] = s;
  }
}

// One thread per query row: dq.
template <typename S, int DM>
__global__ void __launch_bounds__(kRowsPerBlock)
    attention_dq_kernel(const S* qkv, const typename Num<S>::Compute* lse, const typename Num<S>::Compute* delta,
                        const S* d_out, S* d_qkv, PackedQkv p, double scale) {
  using N_ = Num<S>;
  using C = typename N_::Compute;
  constexpr int TK = tile_rows<C, DM>();
  __shared__ C ks[TK][DM];
  __shared__ C vs[TK][DM];
  const GridBlock at = grid_block(p, blockDim.x);
  const int64_t b = at.b, h = at.h, i = at.row0 + threadIdx.x;
  const bool active = i < p.N;
  C q[DM], g[DM], dq[DM];
#pragma unroll
  for (int d = 0; d < DM; ++d) {
    q[d] = active && d < p.D ? N_::load(qkv[p.q(b, i, h) + d]) : C(0);
    g[d] = active && d < p.D ? N_::load(d_out[p.o(b, i, h) + d]) : C(0);
    dq[d] = 0;
  }
  const int64_t row = (b * p.H + h) * p.N + i;
  const C lse_i = active ? lse[row] : C(0), delta_i = active ? delta[row] : C(0);
  for (int64_t j0 = 0; j0 < p.N; j0 += TK) {
    __syncthreads();
    load_tile<S, C, TK, DM>(ks, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
    load_tile<S, C, TK, DM>(vs, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
    __syncthreads();
    if (!active) continue;
    const int tile = int(p.N - j0 < TK ? p.N - j0 : TK);
    for (int jj = 0; jj < tile; ++jj) {
      C s = 0, dp = 0;
#pragma unroll
      for (int d = 0; d < DM; ++d) {
        s += q[d] * ks[jj][d];
        dp += g[d] * vs[jj][d];
      }
      C prob = exp(s * C(scale) - lse_i);
      C ds = prob * (dp - delta_i);
#pragma unroll
      for (int d = 0; d < DM; ++d) dq[d] += ds * ks[jj][d];
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < DM; ++d)
    if (d < p.D) d_qkv[p.q(b, i, h) + d] = N_::store(dq[d] * C(scale));
}

// One thread per key row: dk and dv.
template <typename S, int DM>
__global__ void __launch_bounds__(kRowsPerBlock)
    attention_dkv_kernel(const S* qkv, const typename Num<S>::Compute* lse, const typename Num<S>::Compute* delta,
                         const S* d_out, S* d_qkv, PackedQkv p, double scale) {
  using N_ = Num<S>;
  using C = typename N_::Compute;
  constexpr int TK = tile_rows<C, DM>();
  __shared__ C qs[TK][DM];
  __shared__ C gs[TK][DM];
  __shared__ C lse_s[TK], delta_s[TK];
  const GridBlock at = grid_block(p, blockDim.x);
  const int64_t b = at.b, h = at.h, j = at.row0 + threadIdx.x;
  const bool active = j < p.N;
  C k[DM], v[DM], dk[DM], dv[DM];
#pragma unroll
  for (int d = 0; d < DM; ++d) {
    k[d] = active && d < p.D ? N_::load(qkv[p.k(b, j, h) + d]) : C(0);
    v[d] = active && d < p.D ? N_::load(qkv[p.v(b, j, h) + d]) : C(0);
    dk[d] = 0;
    dv[d] = 0;
  }
  const int64_t rows = (b * p.H + h) * p.N;
  for (int64_t i0 = 0; i0 < p.N; i0 += TK) {
    __syncthreads();
    load_tile<S, C, TK, DM>(qs, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });
    load_tile<S, C, TK, DM>(gs, d_out, i0, p.N, p.D, [&](int64_t i) { return p.o(b, i, h); });
    for (int r = threadIdx.x; r < TK; r += blockDim.x) {
      lse_s[r] = i0 + r < p.N ? lse[rows + i0 + r] : C(0);
      delta_s[r] = i0 + r < p.N ? delta[rows + i0 + r] : C(0);
    }
    __syncthreads();
    if (!active) continue;
    const int tile = int(p.N - i0 < TK ? p.N - i0 : TK);
    for (int ii = 0; ii < tile; ++ii) {
      C s = 0, dp = 0;
#pragma unroll
      for (int d = 0; d < DM; ++d) {
        s += qs[ii][d] * k[d];
        dp += gs[ii][d] * v[d];
      }
      C prob = exp(s * C(scale) - lse_s[ii]);
      C ds = prob * (dp - delta_s[ii]);
#pragma unroll
      for (int d = 0; d < DM; ++d) {
        dv[d] += prob * gs[ii][d];
        dk[d] += ds * qs[ii][d];
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < DM; ++d) {
    if (d >= p.D) continue;
    d_qkv[p.k(b, j, h) + d] = N_::store(dk[d] * C(scale));
    d_qkv[p.v(b, j, h) + d] = N_::store(dv[d]);
  }
}

template <typename S>
using Stat = typename Num<S>::Compute;

}  // namespace

void attention_forward(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H, int64_t D,
                       double scale, void* stream) {
  if (B * N * H == 0) return;
  if (dtype == DType::bf16 || dtype == DType::f16)  // 16 bits: the tensor-core kernels
    return attention_prefers_wmma() ? attention_forward_wmma(dtype, qkv, out, lse, B, N, H, D, scale, stream)
                                    : attention_forward_mma(dtype, qkv, out, lse, B, N, H, D, scale, stream);
  PackedQkv p{N, H, D};
  dispatch_wide_storage("attention", dtype, [&](auto tag) {  // f32 and f64: one thread per row
    using S = decltype(tag);
    dispatch_head_dim(D, [&](auto dm) {
      attention_forward_kernel<S, decltype(dm)::value>
          <<<attention_grid(B, N, H, kRowsPerBlock), kRowsPerBlock, 0, as_stream(stream)>>>(
              static_cast<const S*>(qkv), static_cast<S*>(out), static_cast<Stat<S>*>(lse), p, scale);
    });
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void attention_probs(DType dtype, const void* qkv, const void* lse, void* probs, int64_t B, int64_t N, int64_t H,
                     int64_t D, double scale, void* stream) {
  if (B * N * H == 0) return;
  PackedQkv p{N, H, D};
  dispatch_floating_storage("attention_probs", dtype, [&](auto tag) {
    using S = decltype(tag);
    attention_probs_kernel<S><<<grid_for(B * H * N * N), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(qkv), static_cast<const Stat<S>*>(lse), static_cast<S*>(probs), p, B, scale);
  });
  BAM_CUDA_CHECK_LAUNCH();
}

void attention_backward(DType dtype, const void* qkv, const void* out, const void* lse, const void* d_out, void* d_qkv,
                        void* scratch, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream) {
  if (B * N * H == 0) return;
  PackedQkv p{N, H, D};
  dispatch_floating_storage("attention_backward", dtype, [&](auto tag) {
    using S = decltype(tag);
    auto* delta = static_cast<Stat<S>*>(scratch);
    attention_delta_kernel<S><<<grid_for(B * H * N * 32), kBlock, 0, as_stream(stream)>>>(
        static_cast<const S*>(out), static_cast<const S*>(d_out), delta, p, B);
    if constexpr (std::is_same_v<S, __nv_bfloat16> || std::is_same_v<S, __half>) {
      BAM_CUDA_CHECK_LAUNCH();
      if (attention_prefers_wmma())
        attention_backward_wmma(dtype, qkv, lse, delta, d_out, d_qkv, B, N, H, D, scale, stream);
      else
        attention_backward_mma(dtype, qkv, lse, delta, d_out, d_qkv, B, N, H, D, scale, stream);
    } else {  // f32 and f64: one thread per row (no 16-bit copies of these kernels are compiled)
      dispatch_head_dim(D, [&](auto dm) {
        constexpr int DM = decltype(dm)::value;
        attention_dq_kernel<S, DM><<<attention_grid(B, N, H, kRowsPerBlock), kRowsPerBlock, 0, as_stream(stream)>>>(
            static_cast<const S*>(qkv), static_cast<const Stat<S>*>(lse), delta, static_cast<const S*>(d_out),
            static_cast<S*>(d_qkv), p, scale);
        attention_dkv_kernel<S, DM><<<attention_grid(B, N, H, kRowsPerBlock), kRowsPerBlock, 0, as_stream(stream)>>>(
            static_cast<const S*>(qkv), static_cast<const Stat<S>*>(lse), delta, static_cast<const S*>(d_out),
            static_cast<S*>(d_qkv), p, scale);
      });
    }
  });
  BAM_CUDA_CHECK_LAUNCH();
}

}  // namespace bam::cuda_kernels
