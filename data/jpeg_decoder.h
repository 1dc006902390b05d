// Sequential (baseline/extended, 8-bit, Huffman) JPEG decoding in two halves: the entropy half
// turns a file into quantised DCT coefficients (the CPU part of the GPU decode path), and the
// reconstruction half turns coefficients into RGB exactly as libjpeg-turbo's default decode does
// (islow IDCT, fancy upsampling, fixed-point YCbCr->RGB). The reconstruction is the specification
// the GPU kernels are tested against. The walkthrough is docs/jpeg.md.
//
// Coefficient layout (what gets copied into pinned memory and uploaded): one contiguous int16
// buffer holding every component's blocks. Component c's block at block column bx, block row by
// starts at
//     coefficients[c.coef_offset + (by * c.blocks_w + bx) * 64]
// and its 64 values are in natural order, row-major: index 8 * v + u for vertical frequency v and
// horizontal frequency u (de-zigzagged). Values are quantised; multiply by c.quant[8 * v + u] to
// dequantise. The block grid of each component covers whole MCUs (blocks_w = mcus_x * h_samp), so
// it includes padding blocks beyond the image edge; blocks that no scan wrote are zero.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "data/image_error.h"

namespace bam::data {

inline constexpr int kJpegMaxComponents = 3;
inline constexpr int kJpegBlockSize = 64;

// How the components map to RGB. gray: 1 component, R = G = B = Y. ycbcr: JFIF YCbCr with
// libjpeg's fixed-point tables. rgb: 3 components stored as R, G, B (Adobe transform 0 or
// component ids 'R','G','B'); no conversion.
enum class JpegColorSpace : int32_t { gray = 1, ycbcr = 2, rgb = 3 };

// One colour component, in frame order (Y, Cb, Cr for JFIF).
struct JpegComponent {
  int32_t id;           // component identifier from the frame header
  int32_t h_samp;       // horizontal sampling factor, 1..4
  int32_t v_samp;       // vertical sampling factor, 1..4
  int32_t width;        // samples that carry image data: ceil(image width * h_samp / max_h_samp)
  int32_t height;       // likewise ceil(image height * v_samp / max_v_samp)
  int32_t blocks_w;     // stored block grid: mcus_x * h_samp blocks per row...
  int32_t blocks_h;     // ...and mcus_y * v_samp block rows
  int32_t reserved;     // keeps coef_offset 8-byte aligned; zero
  int64_t coef_offset;  // index (in int16 values) of block (0, 0) in the coefficient buffer
  uint16_t quant[64];   // quantisation table in natural order, as in effect for its first scan
};

// Everything about a decoded frame except the coefficients. Flat and trivially copyable so it
// can travel beside the coefficients into pinned/GPU memory.
struct JpegLayout {
  int32_t width;           // image width in pixels
  int32_t height;          // image height in pixels
  int32_t num_components;  // 1 or 3
  JpegColorSpace color_space;
  int32_t max_h_samp;  // largest h_samp over the components
  int32_t max_v_samp;
  int32_t mcu_width;         // 8 * max_h_samp pixels
  int32_t mcu_height;        // 8 * max_v_samp pixels
  int32_t mcus_x;            // ceil(width / mcu_width)
  int32_t mcus_y;            // ceil(height / mcu_height)
  int32_t exif_orientation;  // 1..8 from APP1 Exif tag 0x0112; 1 when absent. Not applied here.
  int32_t truncated;         // 1 when image data is missing (a scan ended early, a component had no
                             // scan): that part decodes as zero coefficients (grey), as in libjpeg
  int64_t num_coefficients;  // int16 values in the coefficient buffer (64 per block)
  JpegComponent components[kJpegMaxComponents];  // the first num_components are valid
};
static_assert(std::is_trivially_copyable_v<JpegLayout> && std::is_standard_layout_v<JpegLayout>);

struct JpegDecodeLimits {
  // Frames with more pixels than this are refused before anything is allocated. The default
  // (64 Mi pixels, e.g. 8192 x 8192) bounds one full decode to at most about 400 MiB of
  // coefficients, 200 MiB of IDCT planes and 200 MiB of RGB (4:4:4; 4:2:0 needs half the first
  // two); ImageNet's largest photos are far below it.
  int64_t max_pixels = int64_t{1} << 26;
  // For a caller that refuses truncated images anyway (refuse_if_truncated): a frame whose blocks
  // cannot fit in the bytes after its first scan header (a sequential Huffman scan codes a block
  // in 2 bits at least, a DC and an AC code) is refused as incomplete before anything is
  // allocated. A file of a few hundred bytes claiming 8192 x 8192 pixels made a loader thread
  // allocate and zero 200-400 MiB of coefficients first (4:2:0 to 4:4:4).
  bool refuse_truncated = false;
};

struct JpegCoefficients {
  JpegLayout layout{};
  std::vector<int16_t> coefficients;  // layout.num_coefficients values
  std::vector<std::string> warnings;  // recoverable problems (e.g. data ended early; zeros used)
};

// Decodes the entropy-coded data of a sequential JPEG into coefficients. `name` is used in error
// messages. Throws UnsupportedJpegError for valid JPEGs this decoder does not handle (progressive,
// arithmetic, lossless, 12-bit, CMYK/4 components, fractional sampling ratios) and
// ImageDecodeError for damaged or oversized files. Scan data that ends early (truncated file, or a
// marker in the middle of a segment) is padded with zeros as libjpeg does, with a warning; a file
// that ends before its first scan is an error.
JpegCoefficients decode_jpeg_coefficients(const uint8_t* data, size_t size, std::string_view name,
                                          const JpegDecodeLimits& limits = {});

// The same, writing into caller memory (e.g. a slot of a pinned ring buffer). `allocate` is called
// once, after the frame header, with the final layout; it returns space for
// layout.num_coefficients int16 values (which this function zeroes before decoding) or throws to
// refuse. Warnings are appended to *warnings when it is not null.
using JpegCoefficientAllocator = std::function<int16_t*(const JpegLayout&)>;
JpegLayout decode_jpeg_coefficients_into(const uint8_t* data, size_t size, std::string_view name,
                                         const JpegCoefficientAllocator& allocate,
                                         std::vector<std::string>* warnings = nullptr,
                                         const JpegDecodeLimits& limits = {});

// The loaders' rule for a layout whose image data is missing (layout.truncated: a file cut off
// inside its scans): throws ImageDecodeError naming `name` and the decoder's `warnings`, as PIL
// refuses such a file. Does nothing for a complete one.
void refuse_if_truncated(const JpegLayout& layout, std::string_view name, const std::vector<std::string>& warnings);

// Reads APP1 Exif orientation (tag 0x0112) by walking the markers up to the first scan; 1 when
// absent or malformed, or when the data is not a JPEG. Never throws.
int read_jpeg_exif_orientation(const uint8_t* data, size_t size);

// ---- Reconstruction: the CPU specification of the GPU stage ----

// Dequantises one block and applies libjpeg's accurate integer inverse DCT ("islow", jidctint.c:
// 13-bit constants, 2 extra bits between passes, round-half-up descaling), then level-shifts by
// 128 and clamps to 0..255. Writes 8 rows of 8 samples, `stride` bytes apart. Computed in 64-bit
// here; for any block a valid 8-bit stream produces (|coefficient * quant| < 8192 and pass-1
// values < 8192) 32-bit arithmetic gives the same result, which the fast CPU path uses (and GPU
// kernels may). Out-of-range results saturate (libjpeg-turbo's SIMD behaviour; its C code wraps
// values beyond +-512 first, which only corrupt data reaches).
void idct_islow_block(const int16_t* coefficients, const uint16_t* quant, uint8_t* out,
                      ptrdiff_t stride);

// IDCT of every block of component `c` into a plane of (blocks_w * 8) x (blocks_h * 8) samples,
// row stride blocks_w * 8.
void jpeg_component_plane(const JpegLayout& layout, int c, const int16_t* coefficients,
                          uint8_t* plane);

// How component c becomes full resolution, by its ratio (max_h_samp / h_samp, max_v_samp / v_samp),
// which go to *ratio_h and *ratio_v: see jpeg_upsample_convert.
enum class JpegUpsample : int32_t { full = 0, h2v1_fancy, h1v2_fancy, h2v2_fancy, replicate };
JpegUpsample jpeg_upsample_method(const JpegLayout& layout, int c, int* ratio_h, int* ratio_v);

// Upsamples component planes (as jpeg_component_plane writes them) to full resolution and converts
// to interleaved RGB (width * height * 3 bytes). Upsampling per component, by the ratio
// (max_h_samp / h_samp, max_v_samp / v_samp): (1,1) copy; (2,1) triangular "fancy" filter when the
// component is wider than 2 samples, else replication; (1,2) vertical triangular filter; (2,2)
// triangular in both directions when wider than 2 samples, else replication; any other integral
// ratio replicates. Edges replicate the last real sample (component width/height, not the padded
// grid). Colour: libjpeg's ycc_rgb_convert fixed-point equations (see jpeg_reconstruct.cpp).
void jpeg_upsample_convert(const JpegLayout& layout, const uint8_t* const* planes, uint8_t* rgb);

// Both stages: coefficients -> width * height * 3 bytes of RGB (grayscale is replicated).
void jpeg_reconstruct_rgb(const JpegLayout& layout, const int16_t* coefficients, uint8_t* rgb);

}  // namespace bam::data
