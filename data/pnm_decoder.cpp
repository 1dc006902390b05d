// Binary PGM/PPM decoding (see pnm_decoder.h): a header of whitespace-separated numbers with
// '#' comments, one whitespace byte, then the samples row by row.
#include "data/pnm_decoder.h"

#include <fmt/format.h>

#include "data/image_error.h"

namespace bam::data {

bool looks_like_pnm(const uint8_t* bytes, size_t size) {
  return size >= 2 && bytes[0] == 'P' && (bytes[1] == '5' || bytes[1] == '6');
}

namespace {

bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// The next header number: whitespace and comments skipped; at most 65535 (every field's limit
// but the sides', which a later check bounds by max_pixels).
int64_t header_number(const uint8_t* bytes, size_t size, size_t* pos, std::string_view name, const char* field) {
  while (*pos < size && (is_space(bytes[*pos]) || bytes[*pos] == '#')) {
    if (bytes[*pos] == '#')
      while (*pos < size && bytes[*pos] != '\n' && bytes[*pos] != '\r') ++*pos;
    else
      ++*pos;
  }
  if (*pos >= size || bytes[*pos] < '0' || bytes[*pos] > '9')
    throw ImageDecodeError(fmt::format("{}: PNM header has no {} (damaged or truncated)", name, field));
  int64_t value = 0;
  while (*pos < size && bytes[*pos] >= '0' && bytes[*pos] <= '9') {
    value = value * 10 + (bytes[*pos] - '0');
    if (value > (int64_t{1} << 31)) throw ImageDecodeError(fmt::format("{}: PNM {} is too large", name, field));
    ++*pos;
  }
  return value;
}

}  // namespace

DecodedImage decode_pnm(const uint8_t* bytes, size_t size, std::string_view name, const ImageDecodeOptions& options) {
  if (!looks_like_pnm(bytes, size)) throw ImageDecodeError(fmt::format("{}: not a binary PGM/PPM file", name));
  const int channels = bytes[1] == '6' ? 3 : 1;
  size_t pos = 2;
  const int64_t width = header_number(bytes, size, &pos, name, "width");
  const int64_t height = header_number(bytes, size, &pos, name, "height");
  const int64_t maxval = header_number(bytes, size, &pos, name, "maximum value");
  if (width == 0 || height == 0)
    throw ImageDecodeError(fmt::format("{}: PNM image is {}x{}, without pixels", name, width, height));
  if (maxval < 1 || maxval > 65535)
    throw ImageDecodeError(fmt::format("{}: PNM maximum value {} is outside 1..65535", name, maxval));
  if (width * height > options.max_pixels)
    throw ImageDecodeError(
        fmt::format("{}: image is {}x{} = {} pixels, above the decode limit of {} "
                    "(ImageDecodeOptions::max_pixels)",
                    name, width, height, width * height, options.max_pixels));
  if (pos >= size || !is_space(bytes[pos]))
    throw ImageDecodeError(fmt::format("{}: PNM header does not end in whitespace before the pixels", name));
  ++pos;
  const int sample_bytes = maxval > 255 ? 2 : 1;
  const size_t samples = size_t(width) * size_t(height) * channels;
  if (size - pos < samples * sample_bytes)
    throw ImageDecodeError(fmt::format("{}: PNM file is truncated: {}x{} pixels need {} bytes of samples, it has {}",
                                       name, width, height, samples * sample_bytes, size - pos));
  DecodedImage image;
  image.decoder = "bam's PGM/PPM decoder";
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.pixels.resize(size_t(width) * size_t(height) * 3);
  const uint8_t* data = bytes + pos;
  for (size_t i = 0; i < samples; ++i) {
    const uint32_t v = sample_bytes == 2 ? (uint32_t(data[2 * i]) << 8) | data[2 * i + 1] : data[i];
    if (v > uint32_t(maxval))
      throw ImageDecodeError(fmt::format("{}: PNM sample {} is above the maximum value {}", name, v, maxval));
    const auto level = static_cast<uint8_t>(maxval == 255 ? v : (v * 255 + uint32_t(maxval) / 2) / uint32_t(maxval));
    if (channels == 3) {
      image.pixels[i] = level;
    } else {
      uint8_t* rgb = &image.pixels[3 * i];
      rgb[0] = rgb[1] = rgb[2] = level;
    }
  }
  return image;
}

}  // namespace bam::data
