// Flash attention on the tensor cores with WMMA, for 16-bit activations (bf16, f16): the same
// algorithm as attention.cu's one-thread-per-row kernels, but each warp owns 16 rows and every
// product of tiles
// (Q K^T, P V, and in backward dO V^T, dS K, P^T dO, dS^T Q) is a 16x16x16 WMMA on the tensor
// cores with f32 accumulation. The softmax bookkeeping between the products runs in f32 on the
// CUDA cores, on tiles staged in shared memory (WMMA fragments have an opaque register layout, so
// the rows of a tile are rescaled and exponentiated through shared memory):
//   forward:  S = Q K^T (f32) -> online softmax per row (running max m, sum l) -> P in 16 bits,
//             O = O * exp(m_old - m_new) + P V, kept in shared memory in f32; lse = m + log l.
//   dQ:       S = Q K^T, dP = dO V^T, dS = P * (dP - delta) in 16 bits, dQ += dS K (registers).
//   dK, dV:   the transposed products, per block of keys: dV += P^T dO, dK += dS^T Q (registers).
// Blocks are 4 warps = 64 rows of one (image, head); key/query tiles are 64 rows. Head dims are
// zero-padded to DM in {16, 32, 64, 128}; rows beyond N are zero and masked out of the softmax.
#include <mma.h>

#include <cstdlib>
#include <cstring>
#include <cuda/std/limits>

#include "engine/cuda_check.h"
#include "kernels/cuda/attention_layout.cuh"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kRows = 16 * kWarps;   // rows a block owns (queries, or keys in dK/dV)
constexpr int kTile = 64;            // rows of the streamed side per tile
constexpr int kScoreLd = kTile + 4;  // f32 score rows, padded against bank conflicts
constexpr int kProbLd = kTile + 8;   // 16-bit probability rows

template <int DM>
constexpr int half_ld() {  // 16-bit Q/K/V/dO tile rows, padded (a multiple of 8 keeps WMMA's alignment)
  return DM + 8;
}
template <int DM>
constexpr int out_ld() {  // f32 output staging rows
  return DM + 4;
}

template <typename S, int DM, typename Offset>
__device__ __forceinline__ void load_rows(S* tile, const S* src, int64_t r0, int64_t N, int64_t D, Offset offset) {
  load_tile_rows<S, DM, kTile, kThreads, half_ld<DM>()>(tile, src, r0, N, D, offset);
}

template <typename S>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, S, wmma::row_major>;
template <typename S>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::row_major>;
template <typename S>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// scores[16][kScoreLd] = A[16][DM] * B^T where B holds kTile rows of DM (row-major, ld LD): the
// product of a warp's 16 rows with every row of a tile (Q K^T, dO V^T, K Q^T, V dO^T).
template <typename S, int DM>
__device__ __forceinline__ void rows_times_tile_t(const S* a, const S* b, float* scores) {
  constexpr int LD = half_ld<DM>();
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragAcc acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < DM / 16; ++kk) {
      FragA<S> fa;
      FragBCol<S> fb;  // B^T[d][j] = B[j][d]: column-major with ld LD
      wmma::load_matrix_sync(fa, a + kk * 16, LD);
      wmma::load_matrix_sync(fb, b + n * 16 * LD + kk * 16, LD);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(scores + n * 16, acc, kScoreLd, wmma::mem_row_major);
  }
}

// acc[n] += P[16][kTile] (16-bit, ld kProbLd) * T[kTile][DM] (ld LD): P V, dS K, P^T dO, dS^T Q.
template <typename S, int DM>
__device__ __forceinline__ void accumulate_probs_times_tile(FragAcc (&acc)[DM / 16], const S* p, const S* t) {
  constexpr int LD = half_ld<DM>();
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    FragA<S> fa;
    wmma::load_matrix_sync(fa, p + kk * 16, kProbLd);
#pragma unroll
    for (int n = 0; n < DM / 16; ++n) {
      FragBRow<S> fb;
      wmma::load_matrix_sync(fb, t + kk * 16 * LD + n * 16, LD);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Shared memory of the forward kernel, carved from one dynamic buffer.
template <typename S, int DM>
struct ForwardSmem {
  static constexpr size_t tile = size_t(kTile) * half_ld<DM>() * sizeof(S);
  static constexpr size_t scores = size_t(kWarps) * 16 * kScoreLd * sizeof(float);
  static constexpr size_t probs = size_t(kWarps) * 16 * kProbLd * sizeof(S);
  static constexpr size_t out = size_t(kWarps) * 16 * out_ld<DM>() * sizeof(float);
  static constexpr size_t bytes = 3 * tile + scores + probs + out;
};

template <typename S, int DM>
__global__ void __launch_bounds__(kThreads)
    attention_forward_tc_kernel(const S* qkv, S* out, float* lse, PackedQkv p, float scale) {
  using Smem = ForwardSmem<S, DM>;
  constexpr int LD = half_ld<DM>(), OLD = out_ld<DM>();
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  S* q = reinterpret_cast<S*>(smem);
  S* k = reinterpret_cast<S*>(smem + Smem::tile);
  S* v = reinterpret_cast<S*>(smem + 2 * Smem::tile);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* scores = reinterpret_cast<float*>(smem + 3 * Smem::tile) + warp * 16 * kScoreLd;
  S* probs = reinterpret_cast<S*>(smem + 3 * Smem::tile + Smem::scores) + warp * 16 * kProbLd;
  float* o = reinterpret_cast<float*>(smem + 3 * Smem::tile + Smem::scores + Smem::probs) + warp * 16 * OLD;

  const GridBlock at = grid_block(p, kRows);
  const int64_t b = at.b, h = at.h, i0 = at.row0;
  load_rows<S, DM>(q, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });
  // Lanes 2r and 2r+1 own row r of the warp's 16: the even columns and the odd ones.
  const int r = lane / 2, parity = lane % 2;
  for (int d = parity; d < DM; d += 2) o[r * OLD + d] = 0.0f;
  float m = -cuda::std::numeric_limits<float>::infinity(), l = 0.0f;

  for (int64_t j0 = 0; j0 < p.N; j0 += kTile) {
    __syncthreads();  // every warp is done with the previous K/V tile
    load_rows<S, DM>(k, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
    load_rows<S, DM>(v, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
    __syncthreads();
    rows_times_tile_t<S, DM>(q + warp * 16 * LD, k, scores);
    __syncwarp();
    const int valid = int(p.N - j0 < kTile ? p.N - j0 : kTile);
    float tile_max = -cuda::std::numeric_limits<float>::infinity();
    for (int c = parity; c < valid; c += 2) tile_max = fmaxf(tile_max, scores[r * kScoreLd + c] * scale);
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);      // finite: every tile holds at least one key
    const float correction = __expf(m - m_new);  // 0 on the first tile (m = -inf)
    float sum = 0.0f;
    for (int c = parity; c < kTile; c += 2) {
      const float prob = c < valid ? __expf(scores[r * kScoreLd + c] * scale - m_new) : 0.0f;
      const S rounded = S(prob);
      probs[r * kProbLd + c] = rounded;
      sum += float(rounded);  // the normaliser sums what P V multiplies
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * correction + sum;
    m = m_new;
    for (int d = parity; d < DM; d += 2) o[r * OLD + d] *= correction;
    __syncwarp();
    FragAcc acc[DM / 16];
#pragma unroll
    for (int n = 0; n < DM / 16; ++n) wmma::load_matrix_sync(acc[n], o + n * 16, OLD, wmma::mem_row_major);
    accumulate_probs_times_tile<S, DM>(acc, probs, v);
#pragma unroll
    for (int n = 0; n < DM / 16; ++n) wmma::store_matrix_sync(o + n * 16, acc[n], OLD, wmma::mem_row_major);
    __syncwarp();
  }
  const int64_t i = i0 + warp * 16 + r;
  if (i >= p.N) return;
  const float inv = 1.0f / l;
  for (int d = parity; d < p.D; d += 2) out[p.o(b, i, h) + d] = S(o[r * OLD + d] * inv);
  if (parity == 0) lse[(b * p.H + h) * p.N + i] = m + logf(l);
}

// Shared memory of the backward kernels: four 16-bit tiles (the block's own rows twice, the
// streamed side twice), two f32 score tiles and two 16-bit probability tiles per warp, and the
// streamed rows' lse and delta.
template <typename S, int DM>
struct BackwardSmem {
  static constexpr size_t tile = size_t(kTile) * half_ld<DM>() * sizeof(S);
  static constexpr size_t scores = size_t(kWarps) * 2 * 16 * kScoreLd * sizeof(float);
  static constexpr size_t probs = size_t(kWarps) * 2 * 16 * kProbLd * sizeof(S);
  static constexpr size_t stats = 2 * kTile * sizeof(float);
  static constexpr size_t bytes = 4 * tile + scores + probs + stats;
  static_assert(16 * out_ld<DM>() <= 2 * 16 * kScoreLd, "a warp's output staging must fit its score tiles");
};

// Writes a warp's 16 x D result (acc, staged through its score tiles) times `factor` to rows
// row0.. of `dst` at offset(row).
template <typename S, int DM, typename Offset>
__device__ __forceinline__ void write_rows(FragAcc (&acc)[DM / 16], float* staging, S* dst, int64_t row0, int64_t N,
                                           int64_t D, float factor, Offset offset) {
  constexpr int OLD = out_ld<DM>();
  const int lane = threadIdx.x % 32;
  __syncwarp();
#pragma unroll
  for (int n = 0; n < DM / 16; ++n) wmma::store_matrix_sync(staging + n * 16, acc[n], OLD, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < 16 * DM; e += 32) {
    const int r = e / DM, d = e % DM;
    if (row0 + r < N && d < D) dst[offset(row0 + r) + d] = S(staging[r * OLD + d] * factor);
  }
  __syncwarp();
}

// dQ for the block's 64 query rows, streaming keys.
template <typename S, int DM>
__global__ void __launch_bounds__(kThreads) attention_dq_tc_kernel(const S* qkv, const float* lse, const float* delta,
                                                                   const S* d_out, S* d_qkv, PackedQkv p, float scale) {
  using Smem = BackwardSmem<S, DM>;
  constexpr int LD = half_ld<DM>();
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  S* q = reinterpret_cast<S*>(smem);
  S* g = reinterpret_cast<S*>(smem + Smem::tile);
  S* k = reinterpret_cast<S*>(smem + 2 * Smem::tile);
  S* v = reinterpret_cast<S*>(smem + 3 * Smem::tile);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* s = reinterpret_cast<float*>(smem + 4 * Smem::tile) + warp * 2 * 16 * kScoreLd;
  float* dp = s + 16 * kScoreLd;
  S* ds = reinterpret_cast<S*>(smem + 4 * Smem::tile + Smem::scores) + warp * 2 * 16 * kProbLd;

  const GridBlock at = grid_block(p, kRows);
  const int64_t b = at.b, h = at.h, i0 = at.row0;
  load_rows<S, DM>(q, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });
  load_rows<S, DM>(g, d_out, i0, p.N, p.D, [&](int64_t i) { return p.o(b, i, h); });
  const int r = lane / 2, parity = lane % 2;
  const int64_t i = i0 + warp * 16 + r, row = (b * p.H + h) * p.N + i;
  const float lse_i = i < p.N ? lse[row] : 0.0f, delta_i = i < p.N ? delta[row] : 0.0f;
  FragAcc acc[DM / 16];
#pragma unroll
  for (int n = 0; n < DM / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);

  for (int64_t j0 = 0; j0 < p.N; j0 += kTile) {
    __syncthreads();
    load_rows<S, DM>(k, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
    load_rows<S, DM>(v, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
    __syncthreads();
    rows_times_tile_t<S, DM>(q + warp * 16 * LD, k, s);
    rows_times_tile_t<S, DM>(g + warp * 16 * LD, v, dp);
    __syncwarp();
    const int valid = int(p.N - j0 < kTile ? p.N - j0 : kTile);
    for (int c = parity; c < kTile; c += 2) {
      float value = 0.0f;
      if (c < valid && i < p.N) {
        const float prob = __expf(s[r * kScoreLd + c] * scale - lse_i);
        value = prob * (dp[r * kScoreLd + c] - delta_i);
      }
      ds[r * kProbLd + c] = S(value);
    }
    __syncwarp();
    accumulate_probs_times_tile<S, DM>(acc, ds, k);
  }
  write_rows<S, DM>(acc, s, d_qkv, i0 + warp * 16, p.N, p.D, scale, [&](int64_t x) { return p.q(b, x, h); });
}

// dK and dV for the block's 64 key rows, streaming queries.
template <typename S, int DM>
__global__ void __launch_bounds__(kThreads)
    attention_dkv_tc_kernel(const S* qkv, const float* lse, const float* delta, const S* d_out, S* d_qkv, PackedQkv p,
                            float scale) {
  using Smem = BackwardSmem<S, DM>;
  constexpr int LD = half_ld<DM>();
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  S* k = reinterpret_cast<S*>(smem);
  S* v = reinterpret_cast<S*>(smem + Smem::tile);
  S* q = reinterpret_cast<S*>(smem + 2 * Smem::tile);
  S* g = reinterpret_cast<S*>(smem + 3 * Smem::tile);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* st = reinterpret_cast<float*>(smem + 4 * Smem::tile) + warp * 2 * 16 * kScoreLd;
  float* dpt = st + 16 * kScoreLd;
  S* pt = reinterpret_cast<S*>(smem + 4 * Smem::tile + Smem::scores) + warp * 2 * 16 * kProbLd;
  S* dst = pt + 16 * kProbLd;
  float* lse_s = reinterpret_cast<float*>(smem + 4 * Smem::tile + Smem::scores + Smem::probs);
  float* delta_s = lse_s + kTile;

  const GridBlock at = grid_block(p, kRows);
  const int64_t b = at.b, h = at.h, j0 = at.row0;
  load_rows<S, DM>(k, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
  load_rows<S, DM>(v, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
  const int r = lane / 2, parity = lane % 2;  // r: one of the warp's 16 keys; columns: queries
  const int64_t rows = (b * p.H + h) * p.N;
  FragAcc dk[DM / 16], dv[DM / 16];
#pragma unroll
  for (int n = 0; n < DM / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }

  for (int64_t i0 = 0; i0 < p.N; i0 += kTile) {
    __syncthreads();
    load_rows<S, DM>(q, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });
    load_rows<S, DM>(g, d_out, i0, p.N, p.D, [&](int64_t i) { return p.o(b, i, h); });
    for (int c = threadIdx.x; c < kTile; c += kThreads) {
      lse_s[c] = i0 + c < p.N ? lse[rows + i0 + c] : 0.0f;
      delta_s[c] = i0 + c < p.N ? delta[rows + i0 + c] : 0.0f;
    }
    __syncthreads();
    rows_times_tile_t<S, DM>(k + warp * 16 * LD, q, st);   // S^T: keys x queries
    rows_times_tile_t<S, DM>(v + warp * 16 * LD, g, dpt);  // dP^T
    __syncwarp();
    const int valid = int(p.N - i0 < kTile ? p.N - i0 : kTile);
    for (int c = parity; c < kTile; c += 2) {
      float prob = 0.0f, value = 0.0f;
      if (c < valid) {
        prob = __expf(st[r * kScoreLd + c] * scale - lse_s[c]);
        value = prob * (dpt[r * kScoreLd + c] - delta_s[c]);
      }
      pt[r * kProbLd + c] = S(prob);
      dst[r * kProbLd + c] = S(value);
    }
    __syncwarp();
    accumulate_probs_times_tile<S, DM>(dv, pt, g);
    accumulate_probs_times_tile<S, DM>(dk, dst, q);
  }
  write_rows<S, DM>(dk, st, d_qkv, j0 + warp * 16, p.N, p.D, scale, [&](int64_t x) { return p.k(b, x, h); });
  write_rows<S, DM>(dv, st, d_qkv, j0 + warp * 16, p.N, p.D, 1.0f, [&](int64_t x) { return p.v(b, x, h); });
}

}  // namespace

bool attention_prefers_wmma() {
  const char* choice = std::getenv("BAM_ATTENTION");
  return choice != nullptr && std::strcmp(choice, "wmma") == 0;
}

void attention_forward_wmma(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H,
                            int64_t D, double scale, void* stream) {
  PackedQkv p{N, H, D};
  dispatch_16bit_storage("attention", dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_head_dim(D, [&](auto dm) {
      constexpr int DM = decltype(dm)::value;
      launch_with_smem<attention_forward_tc_kernel<S, DM>, kThreads>(
          ForwardSmem<S, DM>::bytes, attention_grid(B, N, H, kRows), stream, static_cast<const S*>(qkv),
          static_cast<S*>(out), static_cast<float*>(lse), p, float(scale));
    });
  });
}

void attention_backward_wmma(DType dtype, const void* qkv, const void* lse, const void* delta, const void* d_out,
                             void* d_qkv, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream) {
  PackedQkv p{N, H, D};
  dispatch_16bit_storage("attention", dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_head_dim(D, [&](auto dm) {
      constexpr int DM = decltype(dm)::value;
      const size_t bytes = BackwardSmem<S, DM>::bytes;
      launch_with_smem<attention_dq_tc_kernel<S, DM>, kThreads>(
          bytes, attention_grid(B, N, H, kRows), stream, static_cast<const S*>(qkv), static_cast<const float*>(lse),
          static_cast<const float*>(delta), static_cast<const S*>(d_out), static_cast<S*>(d_qkv), p, float(scale));
      launch_with_smem<attention_dkv_tc_kernel<S, DM>, kThreads>(
          bytes, attention_grid(B, N, H, kRows), stream, static_cast<const S*>(qkv), static_cast<const float*>(lse),
          static_cast<const float*>(delta), static_cast<const S*>(d_out), static_cast<S*>(d_qkv), p, float(scale));
    });
  });
}

}  // namespace bam::cuda_kernels
