// Dense matrix multiply on the CPU (single and batched, f32 and f64): the engine's GEMM.
#pragma once

#include <cstdint>

namespace bam::cpu {

// Shape letters: C is M x N, the reduction runs over K. All matrices are row-major with an
// explicit row stride (lda, ldb, ldc >= the row length as stored).
//
// C[M,N] = alpha * op(A) * op(B) + beta * C.
//   op(A) is M x K: A is stored M x K when !trans_a, K x M when trans_a.
//   op(B) is K x N: B is stored K x N when !trans_b, N x K when trans_b.
// When beta == 0, C is never read (it may hold NaN). M, N or K may be 0; K == 0 gives C = beta*C.
// Runs on the thread pool of parallel.h (serially when called from inside a parallel region).
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc);

// The same contract in double precision, for finite-difference gradient checks: a plain
// cache-blocked loop, exact rather than fast.
void gemm_f64(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
              const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
              int64_t ldc);

// `batch` independent GEMMs: matrix i uses A + i*stride_a, B + i*stride_b, C + i*stride_c.
// Many small matrices are spread over threads one matrix per task; a few big ones are threaded
// inside each GEMM.
void gemm_batched_f32(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                      int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc,
                      int64_t stride_c);
void gemm_batched_f64(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      double alpha, const double* A, int64_t lda, int64_t stride_a, const double* B,
                      int64_t ldb, int64_t stride_b, double beta, double* C, int64_t ldc,
                      int64_t stride_c);

// The f32 micro-kernel in use: "avx512 12x32", "avx2-fma 6x16" or "portable 4x8".
const char* gemm_kernel_name();

// Chooses the f32 micro-kernel: "auto" (the widest the CPU has: AVX-512, else AVX2/FMA, else
// portable), "avx512" (the same), "avx2" (AVX2/FMA even on an AVX-512 CPU; portable without
// AVX2/FMA) or "portable". Returns false for an unknown name.
// nullptr returns to the default: the environment variable BAM_GEMM_KERNEL (same names, read
// once on first use), else "auto".
// Meant for tests and benchmarks; not to be called while a GEMM runs on another thread.
bool gemm_force_kernel(const char* name);

// gemm_f32's contract with both operands rounded to bf16 first (to nearest, ties to even) and the
// products accumulated in f32: the CPU's matmul under bf16 autocast. On a CPU with AMX-BF16
// (cpu_has_amx_bf16) or AVX-512 BF16 (cpu_has_avx512_bf16) the rounding happens while the operands
// are packed, and the tiles or the pair dot products (VDPBF16PS) multiply them; without either,
// rounded copies of the operands go through gemm_f32 (the specification). They differ only in
// the order of the f32 additions; in one rounding of the alpha/beta epilogue (the packed kernels
// multiply then add, gemm_f32's fuses them) where alpha is not 1 or beta neither 0 nor 1; and in
// subnormal numbers (below 1.2e-38): the tiles and the dot
// products read subnormal operands as zero and flush subnormal sums, and so, where C is added in
// their accumulators (alpha 1 and beta 1), a subnormal C too; the alpha and beta scaling after
// them is ordinary f32 arithmetic.
void gemm_f32_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// C = op(A) op(B) + bias, the bias ([N] floats; null for none) added to every row: the linear
// layer's product, bf16 operands as gemm_f32_bf16. Its specification: fill every row of C with the
// bias, then gemm_f32_bf16 with alpha 1 and beta 1 (beta 0 without a bias); this gives the same
// bits. The packed kernels (AMX, AVX-512 BF16) start their accumulators from the bias instead,
// which saves writing C once and reading it back. With gelu_a, op(A) is GELU of the stored values
// (gelu_erf_forward_f32's bits), applied while A is packed: the MLP's second layer without its
// hidden activation in memory.
void gemm_f32_bf16_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                        const float* B, int64_t ldb, const float* bias, float* C, int64_t ldc, bool gelu_a = false);
// C = op(A) op(B) (bf16 operands, as gemm_f32_bf16 with alpha 1 and beta 0) and row_sums[m] = the
// sum over k of op(A)(m, k) from the f32 values, in double, k in order: the linear layer's weight
// and bias gradients in one pass (dW = g^T x, db = the column sums of g, with trans_a). With
// trans_a the sums have the bits of reduce<float>'s column sums (sum(g, {0}) for M > 1); the packed
// kernels take them while op(A) is packed instead of in a pass of their own. With gelu_b, op(B) is
// GELU of the stored values, as gelu_a above (the second MLP layer's weight gradient, g^T GELU(h)).
void gemm_f32_bf16_bias_grad(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                             const float* B, int64_t ldb, float* C, int64_t ldc, float* row_sums, bool gelu_b = false);
void gemm_batched_f32_bf16(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                           const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                           float beta, float* C, int64_t ldc, int64_t stride_c);

// The bf16-operand GEMM in use: "amx-bf16 32x32", "avx512-bf16 8x32" or "rounded copies + <the f32
// kernel>". (Problems of at most 32,768 multiply-adds always take the rounded copies.)
const char* gemm_bf16_kernel_name();
// "auto" (AMX when the CPU has it, else AVX-512 BF16 when it has that, else the rounded copies),
// "amx" (the same), "avx512bf16" (the pair dot products even with AMX; the rounded copies without
// AVX-512 BF16) or "rounded" (the rounded copies on any CPU); nullptr returns to "auto". Returns
// false for an unknown name. For tests and benchmarks.
bool gemm_bf16_force_kernel(const char* name);

namespace gemm_detail {

// The packed kernels of gemm_f32_bf16 (the driver is gemm_bf16.cpp), with M, N, K > 0. The packing
// (gemm_bf16_pack_avx512bf16.cpp) is only to be used when cpu_has_avx512_bf16(). Packed layouts, in
// bf16 (uint16_t), 512 per tile:
//   op(B): 32-column panels; panel p's K step s (32 deep) is "item" p * steps + s, two tiles of
//          16 columns each in the pair layout, at packed_b + item * 1024; steps = ceil(K / 32).
//   op(A): one 32-row block for all of K: step s's two 16-row tiles at packed_a + s * 1024.
// Zero padding fills every tile past M, N or K.
// gelu_a / gelu_b: the operand is GELU of the stored values (gelu_avx512.h, the GELU loops' bits).
// bf16_pack_b packs the items of visits [visit_begin, visit_end) of the panels x steps items (the
// visits run in an order of its own; together all of them pack every item once).
void bf16_pack_b(bool trans_b, const float* B, int64_t ldb, int64_t N, int64_t K, int64_t visit_begin,
                 int64_t visit_end, uint16_t* packed_b, bool gelu_b);
// With `row_sums` (trans_a only; null for none): the block's 32 rows of op(A) are also summed,
// from the f32 values in k order, into row_sums[0, 32) (doubles, added to what they hold).
void bf16_pack_a(bool trans_a, const float* A, int64_t lda, int64_t M, int64_t K, int64_t i0, uint16_t* packed_a,
                 double* row_sums, bool gelu_a);
// C rows [i0, i0 + 32) x panels [panel_begin, panel_end) = alpha * packed A block x packed B + beta * C;
// with `bias` ([N] floats; only with alpha 1 and beta 1), the bias stands in for every old row of C
// (which is not read). On AMX tiles (gemm_amx.cpp; only when cpu_has_amx_bf16()), or with AVX-512
// BF16's pair dot products (gemm_bf16_dot_avx512bf16.cpp; when cpu_has_avx512_bf16()). The two add
// the products in different orders.
void amx_multiply_panels(const uint16_t* packed_a, const uint16_t* packed_b, int64_t M, int64_t N, int64_t K,
                         int64_t i0, int64_t panel_begin, int64_t panel_end, float alpha, float beta, const float* bias,
                         float* C, int64_t ldc);
void dot_multiply_panels(const uint16_t* packed_a, const uint16_t* packed_b, int64_t M, int64_t N, int64_t K,
                         int64_t i0, int64_t panel_begin, int64_t panel_end, float alpha, float beta, const float* bias,
                         float* C, int64_t ldc);

// What gemm.cpp needs from an f32 micro-kernel implementation (one per instruction set).
// Packed layouts: an A micro-panel holds `mr` rows of op(A) for kc steps, stored k-major
// (a[k*mr + row]); a B micro-panel holds `nr` columns of op(B), stored k-major (b[k*nr + col]).
// Rows/columns past the matrix edge are zero in the packed copy.
struct MicroKernelF32 {
  const char* name;
  int mr;
  int nr;
  // c (row stride ldc) = alpha * a_panel * b_panel + beta * c on the top-left rows x cols of the
  // mr x nr tile (1 <= rows <= mr, 1 <= cols <= nr); beta == 0 never reads c.
  void (*multiply_tile)(int64_t kc, const float* a_panel, const float* b_panel, float* c,
                        int64_t ldc, float alpha, float beta, int rows, int cols);
  // Packs rows x kc of op(A) into ceil(rows / mr) micro-panels at dst. `src` points at element
  // (0, 0) of the block: rows are `ld` apart when !trans, columns are `ld` apart when trans.
  // dst needs room for ceil(rows / mr) * mr * kc floats plus 8 floats of slack.
  void (*pack_a)(bool trans, const float* src, int64_t ld, int64_t rows, int64_t kc, float* dst);
  // Packs kc x cols of op(B) into ceil(cols / nr) micro-panels (same conventions as pack_a).
  void (*pack_b)(bool trans, const float* src, int64_t ld, int64_t cols, int64_t kc, float* dst);
  // The whole GEMM without packing, single-threaded (gemm_f32's contract), for problems too small
  // for packing to pay.
  void (*direct)(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
};

// The AVX2/FMA implementation (gemm_avx2.cpp); only to be used when the CPU supports it.
const MicroKernelF32& avx2_micro_kernel_f32();
// The AVX-512 implementation (gemm_avx512.cpp); only to be used when the CPU supports AVX-512F
// (and with it AVX2 and FMA: its unpacked loop is the AVX2 one).
const MicroKernelF32& avx512_micro_kernel_f32();

}  // namespace gemm_detail

}  // namespace bam::cpu
