// f32 attention of one (batch, head) pair with AVX-512, for the small token counts of this project
// (17 tokens for Fashion-MNIST, 37 and 197 for ImageNet crops). attention.cpp's portable path runs
// each head as five calls to the general GEMM, whose direct loop takes one horizontal sum per
// score at these sizes; here every product is one small register-blocked kernel (small_product)
// whose right operand is read row by row, so q k^T and dO v^T first lay k and v out transposed.
// Compiled with -mavx512f -mfma; attention.cpp only calls in here after cpu_has_avx512(). The
// results agree with the portable path to float rounding (the sums run in another order, and
// exp is a polynomial, exp_avx512.h); tests/test_attention.cpp holds them to it. No standard-library
// templates or inline functions from headers here (tests/check_avx2_objects.sh).
#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/exp_avx512.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::attention_detail {
namespace {

constexpr int64_t kLanes = 16;

int64_t padded(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Where a product's left operand a is: element (r, k) at a[r * row + k * step] (step 1 for rows
// stored as rows; row 1 for a transposed one, read in place).
struct Strides {
  int64_t row, step;
};

// c (rows x cols, ldc apart) = alpha * a b, for a ROWS x 32 tile at most: a's element (r, k) as
// `as` says; b's row k is contiguous (cols floats at b + k * ldb, cols <= 32).
template <int ROWS>
void product_tile(int64_t depth, const float* a, Strides as, const float* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t cols, float alpha) {
  const __mmask16 low = first_lanes16(cols), high = first_lanes16(cols - kLanes);
  __m512 acc[ROWS][2];
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 b0 = load16(b + k * ldb, low);
    const __m512 b1 = load16(b + k * ldb + kLanes, high);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const __m512 a_value = _mm512_set1_ps(a[r * as.row + k * as.step]);
      acc[r][0] = _mm512_fmadd_ps(a_value, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a_value, b1, acc[r][1]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r) {
    store16(c + r * ldc, low, _mm512_mul_ps(scale, acc[r][0]));
    if (high) store16(c + r * ldc + kLanes, high, _mm512_mul_ps(scale, acc[r][1]));
  }
}

// c = alpha * a b for a (rows x depth) and b (depth x cols), laid out as product_tile reads them:
// tiles of 4 rows x 32 columns, and smaller ones at the edges.
void small_product(int64_t rows, int64_t cols, int64_t depth, const float* a, Strides as, const float* b, int64_t ldb,
                   float* c, int64_t ldc, float alpha) {
  for (int64_t j = 0; j < cols; j += 2 * kLanes) {
    const int64_t width = cols - j < 2 * kLanes ? cols - j : 2 * kLanes;
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4)
      product_tile<4>(depth, a + i * as.row, as, b + j, ldb, c + i * ldc + j, ldc, width, alpha);
    switch (rows - i) {
      case 3: product_tile<3>(depth, a + i * as.row, as, b + j, ldb, c + i * ldc + j, ldc, width, alpha); break;
      case 2: product_tile<2>(depth, a + i * as.row, as, b + j, ldb, c + i * ldc + j, ldc, width, alpha); break;
      case 1: product_tile<1>(depth, a + i * as.row, as, b + j, ldb, c + i * ldc + j, ldc, width, alpha); break;
      default: break;
    }
  }
}

// dst (cols x padded(rows)) = src^T, src being rows x cols with rows lds apart. The padding is
// left as it is: the products read only the first `rows` of each row (masked loads).
void transpose_into(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst) {
  const int64_t ldd = padded(rows);
  for (int64_t c = 0; c < cols; ++c) {
    float* d = dst + c * ldd;
    for (int64_t r = 0; r < rows; ++r) d[r] = src[r * lds + c];
  }
}

// The softmax of a row of n scores (s, padded to whole vectors) into p (n floats): the row max
// subtracted first, as the portable softmax_forward.
void softmax_row(const float* s, int64_t n, float* p) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  for (int64_t j = 0; j < n; j += kLanes) m = _mm512_mask_max_ps(m, first_lanes16(n - j), m, _mm512_loadu_ps(s + j));
  const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 lanes = first_lanes16(n - j);
    const __m512 e = _mm512_maskz_mov_ps(lanes, exp_nonpositive_avx512(_mm512_sub_ps(_mm512_loadu_ps(s + j), row_max)));
    store16(p + j, lanes, e);
    total = _mm512_add_ps(total, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 lanes = first_lanes16(n - j);
    store16(p + j, lanes, _mm512_mul_ps(load16(p + j, lanes), inverse));
  }
}

}  // namespace

int64_t avx512_scratch_floats(int64_t N, int64_t D) { return (D + N) * padded(N); }

void forward_head_avx512(const float* q, const float* k, const float* v, int64_t ld_qkv, float* out, int64_t ld_out,
                         float* p, int64_t N, int64_t D, float scale, float* scratch) {
  const int64_t ldn = padded(N);
  float* kt = scratch;           // k^T: D x ldn
  float* scores = kt + D * ldn;  // N x ldn
  transpose_into(k, ld_qkv, N, D, kt);
  small_product(N, N, D, q, {ld_qkv, 1}, kt, ldn, scores, ldn, scale);
  for (int64_t i = 0; i < N; ++i) softmax_row(scores + i * ldn, N, p + i * N);
  small_product(N, D, N, p, {N, 1}, v, ld_qkv, out, ld_out, 1.0f);
}

void backward_head_avx512(const float* q, const float* k, const float* v, int64_t ld_qkv, const float* p,
                          const float* d_out, int64_t ld_out, float* dq, float* dk, float* dv, int64_t N, int64_t D,
                          float scale, float* scratch) {
  const int64_t ldn = padded(N);
  float* vt = scratch;             // v^T: D x ldn
  float* d_scores = vt + D * ldn;  // N x ldn: dP, then dS
  transpose_into(v, ld_qkv, N, D, vt);
  small_product(N, N, D, d_out, {ld_out, 1}, vt, ldn, d_scores, ldn, 1.0f);  // dP = dO v^T
  // dS = P * (dP - sum_j P dP) * scale, row by row (the softmax backward).
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < N; ++i) {
    const float* p_row = p + i * N;
    float* row = d_scores + i * ldn;
    __m512 dot = _mm512_setzero_ps();
    for (int64_t j = 0; j < N; j += kLanes) {
      const __mmask16 lanes = first_lanes16(N - j);
      dot = _mm512_fmadd_ps(load16(p_row + j, lanes), load16(row + j, lanes), dot);
    }
    const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
    for (int64_t j = 0; j < N; j += kLanes) {
      const __mmask16 lanes = first_lanes16(N - j);
      const __m512 g = _mm512_sub_ps(load16(row + j, lanes), total);
      store16(row + j, lanes, _mm512_mul_ps(_mm512_mul_ps(load16(p_row + j, lanes), g), vscale));
    }
  }
  small_product(N, D, N, d_scores, {ldn, 1}, k, ld_qkv, dq, ld_qkv, 1.0f);  // dQ = dS k
  small_product(N, D, N, d_scores, {1, ldn}, q, ld_qkv, dk, ld_qkv, 1.0f);  // dK = dS^T q
  small_product(N, D, N, p, {1, N}, d_out, ld_out, dv, ld_qkv, 1.0f);       // dV = P^T dO
}

}  // namespace bam::cpu::attention_detail
