// Flash attention on the tensor cores at the register level, for 16-bit activations (bf16, f16):
// FlashAttention-2's design with the PTX instruction mma.sync.m16n8k16, whose fragment layouts are
// documented (WMMA's are not), so the softmax runs on the product's registers directly:
//
//   forward:  per warp 16 query rows; per tile of keys S = Q K^T lands in registers, each thread
//             holding 2 rows x 2 columns of every 8-column slice; the row max and sum need two
//             shuffles among the 4 threads that share a row; P = exp(S - m) is rounded to 16 bits
//             and re-packed in registers as the A operand of O += P V (the accumulator layout of
//             one product is the operand layout of the next). O never leaves registers.
//   dQ:       per warp 16 query rows: S = Q K^T and dP = dO V^T, dS = P (dP - delta) in
//             registers, dQ += dS K.
//   dK, dV:   per warp 16 key rows, streaming queries: S^T = K Q^T and dP^T = V dO^T,
//             dV += P^T dO and dK += dS^T Q, again operand-from-accumulator.
//
// The fragment layouts and loaders are in mma_layout.h (host and device code, tested on the CPU
// by tests/test_mma_layout.cpp): with g = lane / 4 and t = lane % 4, a thread holds C elements
// (row g, cols 2t, 2t+1) and (row g+8, cols 2t, 2t+1) of each 16 x 8 product.
//
// Blocks are 4 warps = 64 rows of one (image, head); the streamed side comes in tiles of 64 rows
// (32 for head dim 128, which keeps the accumulators in registers). Head dims are zero-padded to
// DM in {16, 32, 64, 128}; rows beyond N are zero and masked out of the softmax. The statistics
// match the other kernels: lse in natural log, P rounded to 16 bits before both P V and the sum.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cuda/std/limits>

#include "engine/cuda_check.h"
#include "kernels/cuda/attention_layout.cuh"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/mma_layout.h"
#include "kernels/cuda/numeric.cuh"

namespace bam::cuda_kernels {
namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kRows = 16 * kWarps;  // rows a block owns (queries, or keys in dK/dV)
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

template <int DM>
constexpr int tile_ld() {  // 16-bit tile rows, padded by 16 bytes: the fragment loads hit 32 banks
  return DM + 8;
}
template <int DM>
constexpr int stream_rows() {  // rows of the streamed side per tile
  return DM <= 64 ? 64 : 32;
}

// ---- fragments -------------------------------------------------------------------------------

__device__ __forceinline__ MmaLane this_lane() { return mma_lane(threadIdx.x % 32); }

// 16-bit values as their bit patterns and back (no type punning).
__device__ __forceinline__ uint16_t bits_of(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
__device__ __forceinline__ uint16_t bits_of(__half v) { return __half_as_ushort(v); }
template <typename S>
__device__ __forceinline__ float float_of_bits(uint16_t b) {
  if constexpr (std::is_same_v<S, __nv_bfloat16>)
    return __bfloat162float(__ushort_as_bfloat16(b));
  else
    return __half2float(__ushort_as_half(b));
}

template <typename S>
__device__ __forceinline__ uint32_t pack_values(S lo, S hi) {
  return uint32_t(bits_of(lo)) | (uint32_t(bits_of(hi)) << 16);
}
// Two floats rounded to S (to nearest even) and packed, the lower column in the low half.
template <typename S>
__device__ __forceinline__ uint32_t pack_floats(float lo, float hi) {
  return pack_values(S(lo), S(hi));
}
// The two rounded values of a packed register, as floats.
template <typename S>
__device__ __forceinline__ float2 unpack_floats(uint32_t u) {
  return make_float2(float_of_bits<S>(uint16_t(u & 0xffffu)), float_of_bits<S>(uint16_t(u >> 16)));
}

// A shared-memory tile of 16-bit values (row stride ld) as mma_layout.h's loaders read it.
template <typename S>
struct SmemTile {
  const S* p;
  int ld;
  __device__ __forceinline__ uint32_t pair_in_row(int row, int col) const {  // 4-byte aligned: col even
    return *reinterpret_cast<const uint32_t*>(p + row * ld + col);
  }
  __device__ __forceinline__ uint32_t pair_in_column(int row, int col) const {
    return pack_values(p[row * ld + col], p[(row + 1) * ld + col]);
  }
};

// c += a b on the tensor cores, f32 accumulation.
template <typename S>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef BAM_CUDA_EMULATOR  // kernels/cuda/emulator: the same instruction, emulated on the CPU
  ::bam::emu::mma_m16n8k16<S>(c, a, b);
#else
  if constexpr (std::is_same_v<S, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// acc[NT][4] = rows r0.. of `a_tile` (16 x DM) times the first NT*8 rows of `b_tile`, transposed:
// the scores of a warp's 16 rows against a streamed tile (Q K^T, dO V^T, K Q^T, V dO^T).
template <typename S, int DM, int NT>
__device__ __forceinline__ void scores(float (&acc)[NT][4], const S* a_tile, int r0, const S* b_tile, MmaLane l) {
  constexpr int LD = tile_ld<DM>();
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < DM / 16; ++kk) {
    uint32_t a[4];
    load_a(a, SmemTile<S>{a_tile, LD}, r0, kk * 16, l);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      uint32_t b[2];
      load_b_rows_are_n(b, SmemTile<S>{b_tile, LD}, nt * 8, kk * 16, l);
      mma<S>(acc[nt], a, b);
    }
  }
}

// acc[DM/8] += A (16 rows x 16 streamed rows kk*16.., in registers) times rows kk*16.. of `tile`.
template <typename S, int DM>
__device__ __forceinline__ void accumulate(float (&acc)[DM / 8][4], const uint32_t (&a)[4], const S* tile, int kk,
                                           MmaLane l) {
  constexpr int LD = tile_ld<DM>();
#pragma unroll
  for (int dt = 0; dt < DM / 8; ++dt) {
    uint32_t b[2];
    load_b_rows_are_k(b, SmemTile<S>{tile, LD}, kk * 16, dt * 8, l);
    mma<S>(acc[dt], a, b);
  }
}

// Writes a warp's 16 x D accumulator (times `factor`, per the thread's two rows) to rows row0...
// Element e of a slice is row c_row(l, e) = g + 8 (e / 2): `e >> 1` picks the thread's row.
template <typename S, int DM, typename Offset>
__device__ __forceinline__ void store_rows(const float (&acc)[DM / 8][4], S* dst, int64_t row0, int64_t N, int64_t D,
                                           const float (&factor)[2], MmaLane l, Offset offset) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int64_t row = row0 + c_row(l, e);
    if (row >= N) continue;
    S* out = dst + offset(row);
#pragma unroll
    for (int dt = 0; dt < DM / 8; ++dt) {
      const int d = dt * 8 + c_col(l, e);
      if (d < D) out[d] = S(acc[dt][e] * factor[e >> 1]);
    }
  }
}

template <typename S>
struct PackTo {  // a_from_accumulators' packing: two floats rounded to S
  __device__ __forceinline__ uint32_t operator()(float lo, float hi) const { return pack_floats<S>(lo, hi); }
};

__device__ __forceinline__ float row_max4(float v) {  // over the 4 threads that share a row
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float row_sum4(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ---- kernels ---------------------------------------------------------------------------------

template <typename S, int DM>
struct MmaSmem {
  static constexpr int LD = tile_ld<DM>(), SR = stream_rows<DM>();
  static constexpr size_t own = size_t(kRows) * LD * sizeof(S);                      // one tile of the block's rows
  static constexpr size_t stream = size_t(SR) * LD * sizeof(S);                      // one streamed tile
  static constexpr size_t forward = own + 2 * stream;                                // Q; K, V
  static constexpr size_t backward = 2 * own + 2 * stream + 2 * SR * sizeof(float);  // + lse, delta
};

template <typename S, int DM>
__global__ void __launch_bounds__(kThreads)
    attention_forward_mma_kernel(const S* qkv, S* out, float* lse, PackedQkv p, float scale) {
  using Smem = MmaSmem<S, DM>;
  constexpr int LD = Smem::LD, SR = Smem::SR, NT = SR / 8;
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  S* q = reinterpret_cast<S*>(smem);
  S* k = reinterpret_cast<S*>(smem + Smem::own);
  S* v = reinterpret_cast<S*>(smem + Smem::own + Smem::stream);
  const int warp = threadIdx.x / 32;
  const MmaLane l = this_lane();
  const GridBlock at = grid_block(p, kRows);
  const int64_t b = at.b, h = at.h, i0 = at.row0;
  const bool active = i0 + warp * 16 < p.N;  // a warp of padding rows only loads
  load_tile_rows<S, DM, kRows, kThreads, LD>(q, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });

  const float scale2 = scale * kLog2e;  // scores in log2 units: exp2 is one instruction
  float o[DM / 8][4] = {};
  float m[2] = {-cuda::std::numeric_limits<float>::infinity(), -cuda::std::numeric_limits<float>::infinity()};
  float sum[2] = {0.0f, 0.0f};  // this thread's share of each row's sum, reduced at the end
  for (int64_t j0 = 0; j0 < p.N; j0 += SR) {
    __syncthreads();  // every warp is done with the previous K/V tile (and Q is loaded)
    load_tile_rows<S, DM, SR, kThreads, LD>(k, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
    load_tile_rows<S, DM, SR, kThreads, LD>(v, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
    __syncthreads();
    if (!active) continue;
    float s[NT][4];
    scores<S, DM, NT>(s, q, warp * 16, k, l);
    const int valid = int(p.N - j0 < SR ? p.N - j0 : SR);
    float tile_max[2] = {-cuda::std::numeric_limits<float>::infinity(), -cuda::std::numeric_limits<float>::infinity()};
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {  // e >> 1: which of the thread's two rows (c_row)
        const int col = nt * 8 + c_col(l, e);
        s[nt][e] = col < valid ? s[nt][e] * scale2 : -cuda::std::numeric_limits<float>::infinity();
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[nt][e]);
      }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], row_max4(tile_max[r]));  // finite: every tile holds a key
      correction[r] = exp2f(m[r] - m_new);                     // 0 on the first tile
      m[r] = m_new;
      sum[r] *= correction[r];
    }
#pragma unroll
    for (int dt = 0; dt < DM / 8; ++dt) {
      o[dt][0] *= correction[0];
      o[dt][1] *= correction[0];
      o[dt][2] *= correction[1];
      o[dt][3] *= correction[1];
    }
    // P, 16 keys at a time: two 8-column slices of S become one A operand of P V.
#pragma unroll
    for (int kk = 0; kk < SR / 16; ++kk) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[2 * kk][e] = exp2f(s[2 * kk][e] - m[e >> 1]);
        s[2 * kk + 1][e] = exp2f(s[2 * kk + 1][e] - m[e >> 1]);
      }
      uint32_t a[4];
      a_from_accumulators(a, s, kk, PackTo<S>{});
#pragma unroll
      for (int r = 0; r < 4; ++r) {  // the normaliser sums the rounded values P V multiplies
        const float2 f = unpack_floats<S>(a[r]);
        sum[r & 1] += f.x + f.y;  // A register r holds row a_row(l, r) = g + 8 (r % 2)
      }
      accumulate<S, DM>(o, a, v, kk, l);
    }
  }
  if (!active) return;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    sum[r] = row_sum4(sum[r]);
    inv[r] = 1.0f / sum[r];
  }
  store_rows<S, DM>(o, out, i0 + warp * 16, p.N, p.D, inv, l, [&](int64_t i) { return p.o(b, i, h); });
  if (l.t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = i0 + warp * 16 + c_row(l, 2 * r);
      if (i < p.N) lse[(b * p.H + h) * p.N + i] = (m[r] + log2f(sum[r])) * kLn2;
    }
}

// dQ for the block's 64 query rows, streaming keys.
template <typename S, int DM>
__global__ void __launch_bounds__(kThreads)
    attention_dq_mma_kernel(const S* qkv, const float* lse, const float* delta, const S* d_out, S* d_qkv, PackedQkv p,
                            float scale) {
  using Smem = MmaSmem<S, DM>;
  constexpr int LD = Smem::LD, SR = Smem::SR, NT = SR / 8;
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  S* q = reinterpret_cast<S*>(smem);
  S* g = reinterpret_cast<S*>(smem + Smem::own);
  S* k = reinterpret_cast<S*>(smem + 2 * Smem::own);
  S* v = reinterpret_cast<S*>(smem + 2 * Smem::own + Smem::stream);
  const int warp = threadIdx.x / 32;
  const MmaLane l = this_lane();
  const GridBlock at = grid_block(p, kRows);
  const int64_t b = at.b, h = at.h, i0 = at.row0;
  const bool active = i0 + warp * 16 < p.N;
  load_tile_rows<S, DM, kRows, kThreads, LD>(q, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });
  load_tile_rows<S, DM, kRows, kThreads, LD>(g, d_out, i0, p.N, p.D, [&](int64_t i) { return p.o(b, i, h); });
  const float scale2 = scale * kLog2e;
  float lse2[2], delta_r[2];
  bool row_ok[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = i0 + warp * 16 + c_row(l, 2 * r);
    row_ok[r] = i < p.N;
    lse2[r] = row_ok[r] ? lse[(b * p.H + h) * p.N + i] * kLog2e : 0.0f;
    delta_r[r] = row_ok[r] ? delta[(b * p.H + h) * p.N + i] : 0.0f;
  }
  float dq[DM / 8][4] = {};
  for (int64_t j0 = 0; j0 < p.N; j0 += SR) {
    __syncthreads();
    load_tile_rows<S, DM, SR, kThreads, LD>(k, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
    load_tile_rows<S, DM, SR, kThreads, LD>(v, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
    __syncthreads();
    if (!active) continue;
    float s[NT][4], dp[NT][4];
    scores<S, DM, NT>(s, q, warp * 16, k, l);
    scores<S, DM, NT>(dp, g, warp * 16, v, l);
    const int valid = int(p.N - j0 < SR ? p.N - j0 : SR);
    // dS = P (dP - delta), in place in s, then 16 keys at a time as the A operand of dS K.
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, col = nt * 8 + c_col(l, e);
        const float prob = (col < valid && row_ok[r]) ? exp2f(s[nt][e] * scale2 - lse2[r]) : 0.0f;
        s[nt][e] = prob * (dp[nt][e] - delta_r[r]);
      }
#pragma unroll
    for (int kk = 0; kk < SR / 16; ++kk) {
      uint32_t a[4];
      a_from_accumulators(a, s, kk, PackTo<S>{});
      accumulate<S, DM>(dq, a, k, kk, l);
    }
  }
  if (!active) return;
  const float factor[2] = {scale, scale};
  store_rows<S, DM>(dq, d_qkv, i0 + warp * 16, p.N, p.D, factor, l, [&](int64_t i) { return p.q(b, i, h); });
}

// dK and dV for the block's 64 key rows, streaming queries.
template <typename S, int DM>
__global__ void __launch_bounds__(kThreads)
    attention_dkv_mma_kernel(const S* qkv, const float* lse, const float* delta, const S* d_out, S* d_qkv, PackedQkv p,
                             float scale) {
  using Smem = MmaSmem<S, DM>;
  constexpr int LD = Smem::LD, SR = Smem::SR, NT = SR / 8;
  BAM_DYNAMIC_SHARED_MEMORY(smem);
  S* k = reinterpret_cast<S*>(smem);
  S* v = reinterpret_cast<S*>(smem + Smem::own);
  S* q = reinterpret_cast<S*>(smem + 2 * Smem::own);
  S* g = reinterpret_cast<S*>(smem + 2 * Smem::own + Smem::stream);
  float* lse_s = reinterpret_cast<float*>(smem + 2 * Smem::own + 2 * Smem::stream);
  float* delta_s = lse_s + SR;
  const int warp = threadIdx.x / 32;
  const MmaLane l = this_lane();
  const GridBlock at = grid_block(p, kRows);
  const int64_t b = at.b, h = at.h, j0 = at.row0;
  const int64_t rows = (b * p.H + h) * p.N;
  const bool active = j0 + warp * 16 < p.N;
  load_tile_rows<S, DM, kRows, kThreads, LD>(k, qkv, j0, p.N, p.D, [&](int64_t j) { return p.k(b, j, h); });
  load_tile_rows<S, DM, kRows, kThreads, LD>(v, qkv, j0, p.N, p.D, [&](int64_t j) { return p.v(b, j, h); });
  const float scale2 = scale * kLog2e;
  float dk[DM / 8][4] = {}, dv[DM / 8][4] = {};
  for (int64_t i0 = 0; i0 < p.N; i0 += SR) {
    __syncthreads();
    load_tile_rows<S, DM, SR, kThreads, LD>(q, qkv, i0, p.N, p.D, [&](int64_t i) { return p.q(b, i, h); });
    load_tile_rows<S, DM, SR, kThreads, LD>(g, d_out, i0, p.N, p.D, [&](int64_t i) { return p.o(b, i, h); });
    for (int c = threadIdx.x; c < SR; c += kThreads) {
      lse_s[c] = i0 + c < p.N ? lse[rows + i0 + c] * kLog2e : 0.0f;
      delta_s[c] = i0 + c < p.N ? delta[rows + i0 + c] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;
    float st[NT][4], dpt[NT][4];  // keys x queries
    scores<S, DM, NT>(st, k, warp * 16, q, l);
    scores<S, DM, NT>(dpt, v, warp * 16, g, l);
    const int valid = int(p.N - i0 < SR ? p.N - i0 : SR);
    // P^T in place in st, dS^T = P^T (dP^T - delta) in place in dpt; then 16 queries at a time as
    // the A operands of dV += P^T dO and dK += dS^T Q.
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = nt * 8 + c_col(l, e);  // the query
        const float prob = col < valid ? exp2f(st[nt][e] * scale2 - lse_s[col]) : 0.0f;
        st[nt][e] = prob;
        dpt[nt][e] = prob * (dpt[nt][e] - delta_s[col]);
      }
#pragma unroll
    for (int kk = 0; kk < SR / 16; ++kk) {
      uint32_t pa[4], dsa[4];
      a_from_accumulators(pa, st, kk, PackTo<S>{});
      a_from_accumulators(dsa, dpt, kk, PackTo<S>{});
      accumulate<S, DM>(dv, pa, g, kk, l);
      accumulate<S, DM>(dk, dsa, q, kk, l);
    }
  }
  if (!active) return;
  const float k_factor[2] = {scale, scale}, v_factor[2] = {1.0f, 1.0f};
  store_rows<S, DM>(dk, d_qkv, j0 + warp * 16, p.N, p.D, k_factor, l, [&](int64_t j) { return p.k(b, j, h); });
  store_rows<S, DM>(dv, d_qkv, j0 + warp * 16, p.N, p.D, v_factor, l, [&](int64_t j) { return p.v(b, j, h); });
}

}  // namespace

void attention_forward_mma(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H,
                           int64_t D, double scale, void* stream) {
  PackedQkv p{N, H, D};
  dispatch_16bit_storage("attention", dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_head_dim(D, [&](auto dm) {
      constexpr int DM = decltype(dm)::value;
      launch_with_smem<attention_forward_mma_kernel<S, DM>, kThreads>(
          MmaSmem<S, DM>::forward, attention_grid(B, N, H, kRows), stream, static_cast<const S*>(qkv),
          static_cast<S*>(out), static_cast<float*>(lse), p, float(scale));
    });
  });
}

void attention_backward_mma(DType dtype, const void* qkv, const void* lse, const void* delta, const void* d_out,
                            void* d_qkv, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream) {
  PackedQkv p{N, H, D};
  dispatch_16bit_storage("attention", dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_head_dim(D, [&](auto dm) {
      constexpr int DM = decltype(dm)::value;
      const size_t bytes = MmaSmem<S, DM>::backward;
      launch_with_smem<attention_dq_mma_kernel<S, DM>, kThreads>(
          bytes, attention_grid(B, N, H, kRows), stream, static_cast<const S*>(qkv), static_cast<const float*>(lse),
          static_cast<const float*>(delta), static_cast<const S*>(d_out), static_cast<S*>(d_qkv), p, float(scale));
      launch_with_smem<attention_dkv_mma_kernel<S, DM>, kThreads>(
          bytes, attention_grid(B, N, H, kRows), stream, static_cast<const S*>(qkv), static_cast<const float*>(lse),
          static_cast<const float*>(delta), static_cast<const S*>(d_out), static_cast<S*>(d_qkv), p, float(scale));
    });
  });
}

}  // namespace bam::cuda_kernels
