// The pixel stage of JPEG decoding on the CPU after the IDCT (data/jpeg_idct.cpp): chroma
// upsampling as libjpeg-turbo's default ("fancy") decode and fixed-point YCbCr->RGB. This is the
// specification the GPU kernels are checked against; every rounding step follows libjpeg-turbo 2.1
// (jdsample.c, jdcolor.c, jdmainct.c for the edges) so the output matches djpeg bit for bit.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "data/jpeg_arith.h"
#include "data/jpeg_internal.h"

namespace bam::data {

namespace {

using namespace jpeg_arith;

// Loops in chunks of kChunk with a constant trip count are vectorised by GCC and Clang at -O2;
// scalar loops finish each row. On x86-64 GCC also builds an AVX2 clone (BAM_VECTOR_CLONES).
constexpr int kChunk = 32;

BAM_VECTOR_CLONES
void ycbcr_to_rgb_row(const uint8_t* __restrict y, const uint8_t* __restrict cb,
                      const uint8_t* __restrict cr, int width, uint8_t* __restrict rgb) {
  int x = 0;
  for (; x + kChunk <= width; x += kChunk) {
    uint8_t red[kChunk], green[kChunk], blue[kChunk];
    for (int l = 0; l < kChunk; ++l) {
      int32_t luma = y[x + l], b = cb[x + l] - 128, r = cr[x + l] - 128;
      red[l] = clamp255(luma + ((kCrToR * r + kOneHalf) >> kScaleBits));
      green[l] = clamp255(luma + ((-kCbToG * b - kCrToG * r + kOneHalf) >> kScaleBits));
      blue[l] = clamp255(luma + ((kCbToB * b + kOneHalf) >> kScaleBits));
    }
    uint8_t* dst = rgb + 3 * x;
    for (int l = 0; l < kChunk; ++l) {
      dst[3 * l] = red[l];
      dst[3 * l + 1] = green[l];
      dst[3 * l + 2] = blue[l];
    }
  }
  for (; x < width; ++x) ycbcr_to_rgb_pixel(y[x], cb[x], cr[x], rgb + 3 * x);
}

// ---- Upsampling (jdsample.c): the method libjpeg-turbo picks for each component ----
using Upsample = JpegUpsample;

struct ComponentRows {
  const uint8_t* plane;
  ptrdiff_t stride;
  int width, height;  // samples that carry image data
  int ratio_h, ratio_v;
  Upsample method;
};

ComponentRows describe(const JpegLayout& layout, int c, const uint8_t* plane) {
  const JpegComponent& comp = layout.components[c];
  ComponentRows r;
  r.plane = plane;
  r.stride = ptrdiff_t{comp.blocks_w} * 8;
  r.width = comp.width;
  r.height = comp.height;
  r.method = jpeg_upsample_method(layout, c, &r.ratio_h, &r.ratio_v);
  return r;
}

// Horizontal triangle filter doubling n >= 3 values: output 2i is 3/4 of in[i] + 1/4 of in[i-1],
// output 2i+1 is 3/4 of in[i] + 1/4 of in[i+1]; the ends replicate. `scale_shift` and the biases
// come from the caller: (2, 1, 2) for samples, (4, 8, 7) for 3:1 column sums.
template <typename In>
inline void triangle_double(const In* __restrict in, int n, int shift, int bias_left,
                            int bias_right, uint8_t* __restrict out) {
  out[0] = static_cast<uint8_t>((4 * in[0] + bias_left) >> shift);
  out[1] = static_cast<uint8_t>((3 * in[0] + in[1] + bias_right) >> shift);
  int i = 1;
  for (; i + kChunk <= n - 1; i += kChunk) {
    for (int l = 0; l < kChunk; ++l) {
      int here = 3 * in[i + l];
      out[2 * (i + l)] = static_cast<uint8_t>((here + in[i + l - 1] + bias_left) >> shift);
      out[2 * (i + l) + 1] = static_cast<uint8_t>((here + in[i + l + 1] + bias_right) >> shift);
    }
  }
  for (; i < n - 1; ++i) {
    int here = 3 * in[i];
    out[2 * i] = static_cast<uint8_t>((here + in[i - 1] + bias_left) >> shift);
    out[2 * i + 1] = static_cast<uint8_t>((here + in[i + 1] + bias_right) >> shift);
  }
  out[2 * n - 2] = static_cast<uint8_t>((3 * in[n - 1] + in[n - 2] + bias_left) >> shift);
  out[2 * n - 1] = static_cast<uint8_t>((4 * in[n - 1] + bias_right) >> shift);
}

BAM_VECTOR_CLONES
void h2v1_row(const uint8_t* in, int n, uint8_t* out) {
  triangle_double(in, n, 2, 1, 2, out);
}

// 3 * near + far for a row of n samples: the vertical half of the 2-D triangle filter.
BAM_VECTOR_CLONES
void column_sums(const uint8_t* __restrict near, const uint8_t* __restrict far, int n,
                 int* __restrict sums) {
  int i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    for (int l = 0; l < kChunk; ++l) sums[i + l] = 3 * near[i + l] + far[i + l];
  }
  for (; i < n; ++i) sums[i] = 3 * near[i] + far[i];
}

BAM_VECTOR_CLONES
void h2v2_row(const int* colsum, int n, uint8_t* out) {
  triangle_double(colsum, n, 4, 8, 7, out);
}

BAM_VECTOR_CLONES
void h1v2_row(const uint8_t* __restrict near, const uint8_t* __restrict far, int n, int bias,
              uint8_t* __restrict out) {
  int i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    for (int l = 0; l < kChunk; ++l) {
      out[i + l] = static_cast<uint8_t>((3 * near[i + l] + far[i + l] + bias) >> 2);
    }
  }
  for (; i < n; ++i) out[i] = static_cast<uint8_t>((3 * near[i] + far[i] + bias) >> 2);
}

// Produces output row y (full resolution, at least `width` samples) of one component. Returns a
// pointer into the plane for full-size components, else into `buffer`. Vertical neighbours are
// clamped to the component's real rows, as libjpeg's context rows replicate the edge rows.
const uint8_t* upsample_row(const ComponentRows& c, int y, int width, uint8_t* buffer,
                            int* colsum) {
  switch (c.method) {
    case Upsample::full:
      return c.plane + y * c.stride;
    case Upsample::h2v1_fancy:
      h2v1_row(c.plane + y * c.stride, c.width, buffer);
      return buffer;
    case Upsample::h1v2_fancy: {
      // Nearer row 3/4, the row above (even y, rounding bias 1) or below (odd y, bias 2) 1/4.
      int row = y / 2;
      int other = (y & 1) ? std::min(row + 1, c.height - 1) : std::max(row - 1, 0);
      int bias = (y & 1) ? 2 : 1;
      h1v2_row(c.plane + row * c.stride, c.plane + other * c.stride, c.width, bias, buffer);
      return buffer;
    }
    case Upsample::h2v2_fancy: {
      // Vertical 3:1 column sums, then the horizontal filter on them: weights 9/16, 3/16, 3/16,
      // 1/16 with biases 8 (even outputs) and 7 (odd outputs).
      int row = y / 2;
      int other = (y & 1) ? std::min(row + 1, c.height - 1) : std::max(row - 1, 0);
      column_sums(c.plane + row * c.stride, c.plane + other * c.stride, c.width, colsum);
      h2v2_row(colsum, c.width, buffer);
      return buffer;
    }
    case Upsample::replicate: {
      const uint8_t* in = c.plane + (y / c.ratio_v) * c.stride;
      if (c.ratio_h == 1) return in;
      for (int x = 0; x < width; ++x) buffer[x] = in[x / c.ratio_h];
      return buffer;
    }
  }
  return buffer;
}

}  // namespace

JpegUpsample jpeg_upsample_method(const JpegLayout& layout, int c, int* ratio_h, int* ratio_v) {
  const JpegComponent& comp = layout.components[c];
  *ratio_h = layout.max_h_samp / comp.h_samp;
  *ratio_v = layout.max_v_samp / comp.v_samp;
  if (*ratio_h == 1 && *ratio_v == 1) return JpegUpsample::full;
  if (*ratio_h == 2 && *ratio_v == 1 && comp.width > 2) return JpegUpsample::h2v1_fancy;
  if (*ratio_h == 1 && *ratio_v == 2) return JpegUpsample::h1v2_fancy;
  if (*ratio_h == 2 && *ratio_v == 2 && comp.width > 2) return JpegUpsample::h2v2_fancy;
  return JpegUpsample::replicate;  // incl. 2x1 / 2x2 on components 1-2 samples wide
}

void jpeg_component_plane(const JpegLayout& layout, int c, const int16_t* coefficients,
                          uint8_t* plane) {
  const JpegComponent& comp = layout.components[c];
  const ptrdiff_t stride = ptrdiff_t{comp.blocks_w} * 8;
  const int16_t* blocks = coefficients + comp.coef_offset;
  for (int by = 0; by < comp.blocks_h; ++by) {
    for (int bx = 0; bx < comp.blocks_w; ++bx) {
      jpeg_detail::idct_islow_block_fast(
          blocks + (int64_t{by} * comp.blocks_w + bx) * kJpegBlockSize, comp.quant,
          plane + by * 8 * stride + bx * 8, stride);
    }
  }
}

void jpeg_upsample_convert(const JpegLayout& layout, const uint8_t* const* planes, uint8_t* rgb) {
  const int n = layout.num_components;
  const int width = layout.width;
  const size_t row_capacity = size_t(layout.mcus_x) * layout.mcu_width + 8;
  ComponentRows comps[kJpegMaxComponents];
  std::vector<uint8_t> buffers(row_capacity * n);
  std::vector<int> colsum(row_capacity);
  for (int c = 0; c < n; ++c) comps[c] = describe(layout, c, planes[c]);
  for (int y = 0; y < layout.height; ++y) {
    const uint8_t* rows[kJpegMaxComponents];
    for (int c = 0; c < n; ++c) {
      rows[c] = upsample_row(comps[c], y, width, buffers.data() + c * row_capacity, colsum.data());
    }
    uint8_t* dst = rgb + size_t(y) * width * 3;
    if (layout.color_space == JpegColorSpace::gray) {
      for (int x = 0; x < width; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = rows[0][x];
    } else if (layout.color_space == JpegColorSpace::rgb) {
      for (int x = 0; x < width; ++x) {
        dst[3 * x] = rows[0][x];
        dst[3 * x + 1] = rows[1][x];
        dst[3 * x + 2] = rows[2][x];
      }
    } else {
      ycbcr_to_rgb_row(rows[0], rows[1], rows[2], width, dst);
    }
  }
}

void jpeg_reconstruct_rgb(const JpegLayout& layout, const int16_t* coefficients, uint8_t* rgb) {
  size_t offsets[kJpegMaxComponents];
  size_t total = 0;
  for (int c = 0; c < layout.num_components; ++c) {
    offsets[c] = total;
    total += size_t(layout.components[c].blocks_w) * layout.components[c].blocks_h * 64;
  }
  std::unique_ptr<uint8_t[]> storage(new uint8_t[total]);  // every byte is written by the IDCT
  const uint8_t* planes[kJpegMaxComponents];
  for (int c = 0; c < layout.num_components; ++c) {
    jpeg_component_plane(layout, c, coefficients, storage.get() + offsets[c]);
    planes[c] = storage.get() + offsets[c];
  }
  jpeg_upsample_convert(layout, planes, rgb);
}

}  // namespace bam::data
