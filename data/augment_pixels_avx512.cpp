// render_crop's per-pixel steps sixteen pixels at a time with AVX-512 (augment_pixels.h): the
// scalar functions of augment_math.h written as lane operations. Brightness, contrast and
// solarisation treat every channel alike and run over the floats as they are stored; saturation,
// hue and grayscale need a pixel's three channels together, so each block of sixteen interleaved
// RGB pixels (three vectors) is split into an R, a G and a B vector first and merged back after.
//
// Same bits as the scalar code: the same IEEE additions, multiplications and divisions in the same
// order (this file is compiled with -ffp-contract=off, so no multiply is fused into an add), each
// `a > b ? a : b` as VMAXPS(a, b) and `a < b ? a : b` as VMINPS(a, b) (which are defined as exactly
// those selections, ties and NaNs included), and every other branch as a lane mask choosing between
// both sides computed. Compiled with -mavx512f; augment.cpp calls in here only after
// cpu_has_avx512(). No standard-library templates or inline functions from headers here
// (tests/check_avx2_objects.sh).
#include <cstdint>

#include "data/augment_pixels.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::data::augment_detail {
namespace {

constexpr int kLanes = 16;

// The lane indices that split three vectors of sixteen interleaved pixels (48 floats) into one
// channel (two VPERMT2PS: lanes from the first two vectors, then from the third), and merge three
// channels back into output vector k (the same, R and G first, then B). Computed on first use.
struct Shuffles {
  int32_t split_first[3][kLanes], split_second[3][kLanes];
  int32_t merge_first[3][kLanes], merge_second[3][kLanes];
};

Shuffles make_shuffles() {
  Shuffles s{};
  for (int c = 0; c < 3; ++c) {
    for (int j = 0; j < kLanes; ++j) {
      const int flat = 3 * j + c;  // pixel j's channel c among the 48 floats
      s.split_first[c][j] = flat < 2 * kLanes ? flat : 0;
      s.split_second[c][j] = flat < 2 * kLanes ? j : kLanes + (flat - 2 * kLanes);
    }
  }
  for (int k = 0; k < 3; ++k) {
    for (int m = 0; m < kLanes; ++m) {
      const int flat = kLanes * k + m, pixel = flat / 3, channel = flat % 3;
      s.merge_first[k][m] = channel == 0 ? pixel : channel == 1 ? kLanes + pixel : 0;
      s.merge_second[k][m] = channel == 2 ? kLanes + pixel : m;
    }
  }
  return s;
}

const Shuffles& shuffles() {
  static const Shuffles s = make_shuffles();
  return s;
}

__m512i indices(const int32_t* table) { return _mm512_loadu_si512(table); }

// Sixteen pixels at p (48 floats) as their R, G and B vectors.
void split(const float* p, __m512* r, __m512* g, __m512* b) {
  const Shuffles& s = shuffles();
  const __m512 a0 = _mm512_loadu_ps(p), a1 = _mm512_loadu_ps(p + kLanes), a2 = _mm512_loadu_ps(p + 2 * kLanes);
  __m512* out[3] = {r, g, b};
  for (int c = 0; c < 3; ++c) {
    const __m512 first = _mm512_permutex2var_ps(a0, indices(s.split_first[c]), a1);
    *out[c] = _mm512_permutex2var_ps(first, indices(s.split_second[c]), a2);
  }
}

// The inverse of split.
void merge(__m512 r, __m512 g, __m512 b, float* p) {
  const Shuffles& s = shuffles();
  for (int k = 0; k < 3; ++k) {
    const __m512 first = _mm512_permutex2var_ps(r, indices(s.merge_first[k]), g);
    _mm512_storeu_ps(p + k * kLanes, _mm512_permutex2var_ps(first, indices(s.merge_second[k]), b));
  }
}

// clamp255f: v < 0 ? 0 : (v > 255 ? 255 : v).
__m512 clamp255(__m512 v) {
  const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
  const __mmask16 below = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), above = _mm512_cmp_ps_mask(v, top, _CMP_GT_OQ);
  return _mm512_mask_mov_ps(_mm512_mask_mov_ps(v, above, top), below, zero);
}

// luma: 0.299 r + 0.587 g + 0.114 b, added left to right.
__m512 luma(__m512 r, __m512 g, __m512 b) {
  return _mm512_add_ps(
      _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(0.299f), r), _mm512_mul_ps(_mm512_set1_ps(0.587f), g)),
      _mm512_mul_ps(_mm512_set1_ps(0.114f), b));
}

// jitter_pixel's hue step: RGB -> HSV, h += hue, h -= floor(h), HSV -> RGB.
void rotate_hue(__m512* r, __m512* g, __m512* b, float hue) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  // rgb_to_hsv.
  const __m512 mx = _mm512_max_ps(_mm512_max_ps(*r, *g), *b);
  const __m512 mn = _mm512_min_ps(_mm512_min_ps(*r, *g), *b);
  const __m512 d = _mm512_sub_ps(mx, mn);
  const __m512 v = mx;
  const __m512 s = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(mx, zero, _CMP_GT_OQ), d, mx);
  const __mmask16 max_is_r = _mm512_cmp_ps_mask(mx, *r, _CMP_EQ_OQ);
  const __mmask16 max_is_g = static_cast<__mmask16>(~max_is_r & _mm512_cmp_ps_mask(mx, *g, _CMP_EQ_OQ));
  __m512 hh = _mm512_add_ps(_mm512_set1_ps(4.0f), _mm512_div_ps(_mm512_sub_ps(*r, *g), d));
  hh = _mm512_mask_mov_ps(hh, max_is_g, _mm512_add_ps(_mm512_set1_ps(2.0f), _mm512_div_ps(_mm512_sub_ps(*b, *r), d)));
  hh = _mm512_mask_mov_ps(hh, max_is_r, _mm512_div_ps(_mm512_sub_ps(*g, *b), d));
  hh = _mm512_div_ps(hh, _mm512_set1_ps(6.0f));
  hh = _mm512_mask_add_ps(hh, _mm512_cmp_ps_mask(hh, zero, _CMP_LT_OQ), hh, one);
  // d == 0 (grey): h = 0, whatever the divisions by zero above gave.
  __m512 h = _mm512_mask_mov_ps(hh, _mm512_cmp_ps_mask(d, zero, _CMP_EQ_OQ), zero);
  h = _mm512_add_ps(h, _mm512_set1_ps(hue));
  h = _mm512_sub_ps(h, _mm512_floor_ps(h));
  // hsv_to_rgb.
  const __m512 h6 = _mm512_mul_ps(h, _mm512_set1_ps(6.0f));
  const __m512 whole = _mm512_floor_ps(h6);
  // h is in [0, 1] here (1 only when a tiny negative h rounded up), so floor(6h) is 0 ... 6 and
  // `% 6` only maps 6 to 0.
  __m512i sector = _mm512_cvttps_epi32(whole);
  const __m512i six = _mm512_set1_epi32(6);
  sector = _mm512_mask_sub_epi32(sector, _mm512_cmpge_epi32_mask(sector, six), sector, six);
  const __m512 f = _mm512_sub_ps(h6, whole);
  const __m512 p = _mm512_mul_ps(v, _mm512_sub_ps(one, s));
  const __m512 q = _mm512_mul_ps(v, _mm512_sub_ps(one, _mm512_mul_ps(s, f)));
  const __m512 t = _mm512_mul_ps(v, _mm512_sub_ps(one, _mm512_mul_ps(s, _mm512_sub_ps(one, f))));
  // The switch: sector 0 (v, t, p), 1 (q, v, p), 2 (p, v, t), 3 (p, q, v), 4 (t, p, v), else (v, p, q).
  const __m512 red[6] = {v, q, p, p, t, v}, green[6] = {t, v, v, q, p, p}, blue[6] = {p, p, t, v, v, q};
  __m512 out_r = red[5], out_g = green[5], out_b = blue[5];
  for (int i = 0; i < 5; ++i) {
    const __mmask16 here = _mm512_cmpeq_epi32_mask(sector, _mm512_set1_epi32(i));
    out_r = _mm512_mask_mov_ps(out_r, here, red[i]);
    out_g = _mm512_mask_mov_ps(out_g, here, green[i]);
    out_b = _mm512_mask_mov_ps(out_b, here, blue[i]);
  }
  *r = out_r;
  *g = out_g;
  *b = out_b;
}

}  // namespace

int jitter_avx512(float* px, int n, int op, float brightness, float contrast, float saturation, float hue, float mean) {
  const int done = n - n % kLanes;
  if (op == 0 || op == 1) {
    // The same step on every channel: over the stored floats, three vectors per sixteen pixels.
    const __m512 factor = _mm512_set1_ps(op == 0 ? brightness : contrast), level = _mm512_set1_ps(mean);
    for (int i = 0; i < 3 * done; i += kLanes) {
      const __m512 x = _mm512_loadu_ps(px + i);
      const __m512 y =
          op == 0 ? _mm512_mul_ps(x, factor) : _mm512_add_ps(level, _mm512_mul_ps(factor, _mm512_sub_ps(x, level)));
      _mm512_storeu_ps(px + i, clamp255(y));
    }
    return done;
  }
  const __m512 amount = _mm512_set1_ps(saturation);
  for (int i = 0; i < done; i += kLanes) {
    __m512 r, g, b;
    split(px + 3 * i, &r, &g, &b);
    if (op == 2) {
      const __m512 gray = luma(r, g, b);
      r = clamp255(_mm512_add_ps(gray, _mm512_mul_ps(amount, _mm512_sub_ps(r, gray))));
      g = clamp255(_mm512_add_ps(gray, _mm512_mul_ps(amount, _mm512_sub_ps(g, gray))));
      b = clamp255(_mm512_add_ps(gray, _mm512_mul_ps(amount, _mm512_sub_ps(b, gray))));
    } else {
      rotate_hue(&r, &g, &b, hue);
    }
    merge(r, g, b, px + 3 * i);
  }
  return done;
}

int grayscale_avx512(float* px, int n) {
  const int done = n - n % kLanes;
  for (int i = 0; i < done; i += kLanes) {
    __m512 r, g, b;
    split(px + 3 * i, &r, &g, &b);
    const __m512 gray = luma(r, g, b);
    merge(gray, gray, gray, px + 3 * i);
  }
  return done;
}

int solarize_avx512(float* px, int n) {
  const int done = n - n % kLanes;
  const __m512 half = _mm512_set1_ps(128.0f), top = _mm512_set1_ps(255.0f);
  for (int i = 0; i < 3 * done; i += kLanes) {
    const __m512 v = _mm512_loadu_ps(px + i);
    _mm512_storeu_ps(px + i, _mm512_mask_sub_ps(v, _mm512_cmp_ps_mask(v, half, _CMP_GE_OQ), top, v));
  }
  return done;
}

}  // namespace bam::data::augment_detail
