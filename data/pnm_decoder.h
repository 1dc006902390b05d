// Binary PGM and PPM files (P5, P6), the Netpbm formats torchvision's folders accept as .pgm and
// .ppm, decoded here rather than by stb_image, whose 16-bit path read past its buffer
// (CVE-2021-42716). Samples of 1..65535 levels (two bytes, big-endian, above 255) are scaled to
// 0..255 as PIL does: round(v * 255 / maxval).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "data/image_decode.h"

namespace bam::data {

// True when the bytes start with a binary PGM/PPM magic number ("P5" or "P6").
bool looks_like_pnm(const uint8_t* bytes, size_t size);

// RGB pixels (gray replicated). Throws ImageDecodeError, naming `name`, for a damaged header,
// samples above maxval, a size over options.max_pixels, or a file shorter than its pixels.
DecodedImage decode_pnm(const uint8_t* bytes, size_t size, std::string_view name, const ImageDecodeOptions& options);

}  // namespace bam::data
