// The front door for turning an image file into RGB8 pixels: our JPEG decoder for sequential
// JPEGs, stb_image for everything else (progressive/CMYK JPEG, PNG, BMP, GIF, ...), with the Exif
// orientation applied so the pixels are upright as a viewer (or PIL's exif_transpose) shows them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/image_error.h"
#include "data/jpeg_decoder.h"

namespace bam::data {

struct DecodedImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;        // width * height * 3 bytes, RGB, rows top to bottom
  bool used_fallback = false;         // true when stb_image decoded it rather than our JPEG decoder
  const char* decoder = "bam's JPEG decoder";  // or "bam's PGM/PPM decoder", "stb_image"
  int exif_orientation = 1;           // the orientation found (1..8); already applied when asked to
  std::vector<std::string> warnings;  // recoverable problems, e.g. JPEG data that ended early
};

// Images whose long side is more than this many times the short one are refused (by decode_image
// and the GPU loader): a line of pixels (1 x 16,000,000 fits max_pixels) is no photo, and the
// evaluation's resize to a 256-pixel short side would make it billions of pixels long.
inline constexpr int kMaxAspectRatio = 1000;
void refuse_if_extreme_aspect(int width, int height, std::string_view name);

struct ImageDecodeOptions {
  // Images with more pixels are refused before decoding (see JpegDecodeLimits for the reasoning).
  int64_t max_pixels = int64_t{1} << 26;
  // Files larger than this are refused by decode_image_file without being read.
  int64_t max_file_bytes = int64_t{1} << 30;
  bool apply_exif_orientation = true;
  // When false, only our JPEG decoder is used; anything else throws (the fuzzer uses this).
  bool allow_fallback = true;
  // When true, a JPEG whose image data is incomplete (a cut-off file: the missing part would decode
  // as grey, as libjpeg and djpeg do) throws ImageDecodeError instead, as PIL does: the loaders
  // report and skip such a file rather than train on it.
  bool refuse_truncated = false;
};

// The loaders' rule, on the CPU and the GPU path alike: a JPEG cut off inside its image data is
// reported and skipped (as PIL refuses it), not trained on with its missing part grey.
ImageDecodeOptions loader_decode_options();
// Our JPEG decoder's coefficients (decode_jpeg_coefficients_into) under `options`: their
// max_pixels, and a truncated file refused when they say refuse_truncated. The JPEG path of
// decode_image, and of the GPU loader, which reconstructs the pixels on the device; both then
// refuse sides too far apart (refuse_if_extreme_aspect), as for any format.
JpegLayout decode_jpeg_layout(const uint8_t* bytes, size_t size, std::string_view name,
                              const JpegCoefficientAllocator& allocate, std::vector<std::string>* warnings,
                              const ImageDecodeOptions& options);

// Decodes an in-memory file. `name` (usually the path) starts every error message. Throws
// ImageDecodeError for anything that cannot be decoded; never returns an empty image.
DecodedImage decode_image(const uint8_t* bytes, size_t size, std::string_view name,
                          const ImageDecodeOptions& options = {});

// Reads a whole file (refusing ones above options.max_file_bytes); errors name the path.
std::vector<uint8_t> read_image_file(const std::string& path, const ImageDecodeOptions& options = {});

// Reads and decodes a file.
DecodedImage decode_image_file(const std::string& path, const ImageDecodeOptions& options = {});

// Transforms pixels stored with Exif orientation `orientation` (1..8) into upright pixels:
// 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise,
// 7 transverse (transpose then rotate 180), 8 rotate 90 counter-clockwise. 5..8 swap width and
// height. Other values leave the image alone.
void apply_exif_orientation(int orientation, DecodedImage* image);

}  // namespace bam::data
