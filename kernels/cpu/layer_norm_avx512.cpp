// AVX-512 twins of the f32 LayerNorm loops (layer_norm.cpp), bit for bit: each row's statistics
// are the same eight interleaved double sums (lane k of one zmm register holds the terms j with
// j mod 8 == k, added in the same order) combined in the same pairs, and every f32 operation is
// the specification's, in its order. The file is compiled with -ffp-contract=off, as layer_norm.cpp
// is: a multiply fused into an add would round once instead of twice and change the bits.
// Compiled with -mavx512f; layer_norm.cpp calls in here only after cpu_has_avx512().
#include <cmath>
#include <cstdint>

#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::layer_norm_detail {
namespace {

// The mask of the first `count` of 8 double lanes.
inline __mmask8 first_lanes8(int64_t count) {
  return count >= 8 ? __mmask8(0xFF) : count <= 0 ? __mmask8(0) : static_cast<__mmask8>((1u << count) - 1u);
}

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)): row_sum's combination of its eight sums.
inline double combine(__m512d acc) {
  const __m256d quad = _mm256_add_pd(_mm512_castpd512_pd256(acc), _mm512_extractf64x4_pd(acc, 1));
  const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(quad), _mm256_extractf128_pd(quad, 1));
  return _mm_cvtsd_f64(pair) + _mm_cvtsd_f64(_mm_unpackhi_pd(pair, pair));
}

// Adds the 16 terms of a chunk starting at a multiple of 16 (`valid` of them real) into the eight
// sums: first the low eight (j mod 8 = lane), then the high eight, as row_sum's loop does.
inline __m512d add_chunk(__m512d acc, __m512d low, __m512d high, int64_t valid) {
  acc = _mm512_mask_add_pd(acc, first_lanes8(valid), acc, low);
  return _mm512_mask_add_pd(acc, first_lanes8(valid - 8), acc, high);
}

}  // namespace

void forward_rows_f32_avx512(const float* x, const float* weight, const float* bias, float* y, float* mean, float* rstd,
                             int64_t begin, int64_t end, int64_t cols, double eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    __m512d acc = _mm512_setzero_pd();
    for (int64_t j = 0; j < cols; j += 16) {
      const __m512 v = load16(xr + j, first_lanes16(cols - j));
      acc = add_chunk(acc, low_doubles(v), high_doubles(v), cols - j);
    }
    const double m = combine(acc) / static_cast<double>(cols);
    const __m512d vm = _mm512_set1_pd(m);
    acc = _mm512_setzero_pd();
    for (int64_t j = 0; j < cols; j += 16) {
      const __m512 v = load16(xr + j, first_lanes16(cols - j));
      const __m512d d_low = _mm512_sub_pd(low_doubles(v), vm), d_high = _mm512_sub_pd(high_doubles(v), vm);
      acc = add_chunk(acc, _mm512_mul_pd(d_low, d_low), _mm512_mul_pd(d_high, d_high), cols - j);
    }
    const double v = combine(acc) / static_cast<double>(cols);
    const float mu = static_cast<float>(m);
    const float rs = static_cast<float>(1.0 / std::sqrt(v + eps));
    mean[r] = mu;
    rstd[r] = rs;
    const __m512 vmu = _mm512_set1_ps(mu), vrs = _mm512_set1_ps(rs);
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 lanes = first_lanes16(cols - j);
      __m512 h = _mm512_mul_ps(_mm512_sub_ps(load16(xr + j, lanes), vmu), vrs);
      if (weight) h = _mm512_mul_ps(h, load16(weight + j, lanes));
      if (bias) h = _mm512_add_ps(h, load16(bias + j, lanes));
      store16(yr + j, lanes, h);
    }
  }
}

void backward_rows_f32_avx512(const float* x, const float* weight, const float* mean, const float* rstd,
                              const float* dy, float* dx, double* partial_weight, double* partial_bias, int64_t begin,
                              int64_t end, int64_t cols) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    const __m512 vmu = _mm512_set1_ps(mean[r]), vrs = _mm512_set1_ps(rstd[r]);
    // xhat = (x - mean) * rstd and g = dy * weight, recomputed in each pass (the same operations,
    // so the same values) instead of kept in a row buffer.
    const auto xhat_at = [&](int64_t j, __mmask16 lanes) {
      return _mm512_mul_ps(_mm512_sub_ps(load16(xr + j, lanes), vmu), vrs);
    };
    const auto g_at = [&](__m512 dy_chunk, int64_t j, __mmask16 lanes) {
      return weight ? _mm512_mul_ps(dy_chunk, load16(weight + j, lanes)) : dy_chunk;
    };
    __m512d sum_g = _mm512_setzero_pd(), sum_g_xhat = _mm512_setzero_pd();
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 lanes = first_lanes16(cols - j);
      const __mmask8 low_lanes = first_lanes8(cols - j), high_lanes = first_lanes8(cols - j - 8);
      const __m512 dy_chunk = load16(gr + j, lanes);
      const __m512 xhat = xhat_at(j, lanes);
      const __m512d xhat_low = low_doubles(xhat), xhat_high = high_doubles(xhat);
      if (partial_weight) {
        // pw[j] += dy * xhat and pb[j] += dy, in double (the products of two floats are exact).
        const __m512d dy_low = low_doubles(dy_chunk), dy_high = high_doubles(dy_chunk);
        double* pw = partial_weight + j;
        double* pb = partial_bias + j;
        store8d(pw, low_lanes, _mm512_add_pd(load8d(pw, low_lanes), _mm512_mul_pd(dy_low, xhat_low)));
        store8d(pw + 8, high_lanes, _mm512_add_pd(load8d(pw + 8, high_lanes), _mm512_mul_pd(dy_high, xhat_high)));
        store8d(pb, low_lanes, _mm512_add_pd(load8d(pb, low_lanes), dy_low));
        store8d(pb + 8, high_lanes, _mm512_add_pd(load8d(pb + 8, high_lanes), dy_high));
      }
      if (dx) {
        const __m512 g = g_at(dy_chunk, j, lanes);
        const __m512d g_low = low_doubles(g), g_high = high_doubles(g);
        sum_g = add_chunk(sum_g, g_low, g_high, cols - j);
        sum_g_xhat = add_chunk(sum_g_xhat, _mm512_mul_pd(g_low, xhat_low), _mm512_mul_pd(g_high, xhat_high), cols - j);
      }
    }
    if (!dx) continue;
    const __m512 mean_g = _mm512_set1_ps(static_cast<float>(combine(sum_g) / static_cast<double>(cols)));
    const __m512 mean_gx = _mm512_set1_ps(static_cast<float>(combine(sum_g_xhat) / static_cast<double>(cols)));
    float* dr = dx + r * cols;
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 lanes = first_lanes16(cols - j);
      const __m512 g = g_at(load16(gr + j, lanes), j, lanes);
      const __m512 xhat = xhat_at(j, lanes);
      // rstd * ((g - mean(g)) - xhat * mean(g xhat))
      const __m512 inner = _mm512_sub_ps(_mm512_sub_ps(g, mean_g), _mm512_mul_ps(xhat, mean_gx));
      store16(dr + j, lanes, _mm512_mul_ps(vrs, inner));
    }
  }
}

}  // namespace bam::cpu::layer_norm_detail
