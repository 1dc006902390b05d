// decode_image: picks our JPEG decoder, our PGM/PPM decoder or stb_image, checks size limits
// before decoding, and applies the Exif orientation.
#include "data/image_decode.h"

#include <fmt/format.h>
#include <stb_image.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "data/jpeg_decoder.h"
#include "data/pnm_decoder.h"

namespace bam::data {

namespace {

bool looks_like_jpeg(const uint8_t* bytes, size_t size) {
  return size >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8;
}

// `why` says why our decoder passed the file on (empty for non-JPEG files).
DecodedImage decode_with_stb(const uint8_t* bytes, size_t size, std::string_view name,
                             const ImageDecodeOptions& options, std::string_view why) {
  std::string context = why.empty() ? std::string() : fmt::format(" ({})", why);
  if (size > size_t{INT_MAX}) {
    throw ImageDecodeError(
        fmt::format("{}: file of {} bytes is too large for stb_image{}", name, size, context));
  }
  int width = 0, height = 0, channels = 0;
  const int length = static_cast<int>(size);
  if (!stbi_info_from_memory(bytes, length, &width, &height, &channels)) {
    throw ImageDecodeError(fmt::format("{}: not a decodable image{} (stb_image: {})", name, context,
                                       stbi_failure_reason()));
  }
  if (int64_t{width} * height > options.max_pixels) {
    throw ImageDecodeError(
        fmt::format("{}: image is {}x{} = {} pixels, above the decode limit of "
                    "{} (ImageDecodeOptions::max_pixels)",
                    name, width, height, int64_t{width} * height, options.max_pixels));
  }
  // The file's own channels, converted to RGB here: stb's conversion of 16-bit samples read past
  // its buffer (CVE-2021-42716). Gray is replicated and alpha dropped, as PIL's convert("RGB").
  uint8_t* pixels = stbi_load_from_memory(bytes, length, &width, &height, &channels, 0);
  if (pixels == nullptr) {
    throw ImageDecodeError(fmt::format("{}: cannot decode image{} (stb_image: {})", name, context,
                                       stbi_failure_reason()));
  }
  std::unique_ptr<uint8_t, void (*)(void*)> owned(pixels, stbi_image_free);
  if (channels < 1 || channels > 4)
    throw ImageDecodeError(fmt::format("{}: stb_image gave {} channels{}", name, channels, context));
  DecodedImage image;
  image.width = width;
  image.height = height;
  const size_t count = size_t(width) * size_t(height);
  image.pixels.resize(count * 3);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* from = pixels + i * size_t(channels);
    uint8_t* to = &image.pixels[3 * i];
    if (channels >= 3) {
      to[0] = from[0], to[1] = from[1], to[2] = from[2];
    } else {
      to[0] = to[1] = to[2] = from[0];
    }
  }
  image.used_fallback = true;
  image.decoder = "stb_image";
  return image;
}

}  // namespace

void apply_exif_orientation(int orientation, DecodedImage* image) {
  if (orientation < 2 || orientation > 8) return;
  const int w = image->width;
  const int h = image->height;
  const bool swap = orientation >= 5;
  const int out_w = swap ? h : w;
  const int out_h = swap ? w : h;
  std::vector<uint8_t> out(image->pixels.size());
  for (int r = 0; r < out_h; ++r) {
    for (int c = 0; c < out_w; ++c) {
      int sr = 0, sc = 0;  // the source pixel shown at (r, c)
      // clang-format off
      switch (orientation) {
        case 2: sr = r; sc = w - 1 - c; break;
        case 3: sr = h - 1 - r; sc = w - 1 - c; break;
        case 4: sr = h - 1 - r; sc = c; break;
        case 5: sr = c; sc = r; break;
        case 6: sr = h - 1 - c; sc = r; break;
        case 7: sr = h - 1 - c; sc = w - 1 - r; break;
        case 8: sr = c; sc = w - 1 - r; break;
      }
      // clang-format on
      std::memcpy(&out[(size_t(r) * out_w + c) * 3], &image->pixels[(size_t(sr) * w + sc) * 3], 3);
    }
  }
  image->pixels = std::move(out);
  image->width = out_w;
  image->height = out_h;
}

void refuse_if_extreme_aspect(int width, int height, std::string_view name) {
  const int64_t long_side = std::max(width, height), short_side = std::min(width, height);
  if (long_side > int64_t{kMaxAspectRatio} * short_side)
    throw ImageDecodeError(
        fmt::format("{}: image is {}x{}, its sides more than {} to 1 apart", name, width, height, kMaxAspectRatio));
}

ImageDecodeOptions loader_decode_options() {
  ImageDecodeOptions options;
  options.refuse_truncated = true;
  return options;
}

JpegLayout decode_jpeg_layout(const uint8_t* bytes, size_t size, std::string_view name,
                              const JpegCoefficientAllocator& allocate, std::vector<std::string>* warnings,
                              const ImageDecodeOptions& options) {
  JpegDecodeLimits limits;
  limits.max_pixels = options.max_pixels;
  limits.refuse_truncated = options.refuse_truncated;
  std::vector<std::string> found;  // refuse_if_truncated names this decode's warnings alone
  const JpegLayout layout = decode_jpeg_coefficients_into(bytes, size, name, allocate, &found, limits);
  if (options.refuse_truncated) refuse_if_truncated(layout, name, found);
  if (warnings) warnings->insert(warnings->end(), found.begin(), found.end());
  return layout;
}

DecodedImage decode_image(const uint8_t* bytes, size_t size, std::string_view name,
                          const ImageDecodeOptions& options) {
  if (size == 0) throw ImageDecodeError(fmt::format("{}: empty file (0 bytes)", name));
  DecodedImage image;
  if (looks_like_jpeg(bytes, size)) {
    try {
      std::unique_ptr<int16_t[]> coefficients;  // the decoder zeroes it; no need to twice
      const JpegLayout layout = decode_jpeg_layout(
          bytes, size, name,
          [&](const JpegLayout& l) {
            coefficients.reset(new int16_t[size_t(l.num_coefficients)]);
            return coefficients.get();
          },
          &image.warnings, options);
      image.width = layout.width;
      image.height = layout.height;
      image.pixels.resize(size_t(layout.width) * layout.height * 3);
      jpeg_reconstruct_rgb(layout, coefficients.get(), image.pixels.data());
      image.exif_orientation = layout.exif_orientation;
    } catch (const UnsupportedJpegError& unsupported) {
      if (!options.allow_fallback) throw;
      // The message starts with "<name>: "; keep only the reason.
      std::string_view reason = unsupported.what();
      if (reason.substr(0, name.size()) == name && reason.substr(name.size(), 2) == ": ") {
        reason.remove_prefix(name.size() + 2);
      }
      image = decode_with_stb(bytes, size, name, options,
                              fmt::format("{}, which our decoder does not handle", reason));
      image.exif_orientation = read_jpeg_exif_orientation(bytes, size);
    }
  } else if (looks_like_pnm(bytes, size)) {
    image = decode_pnm(bytes, size, name, options);
  } else {
    if (!options.allow_fallback) {
      throw ImageDecodeError(
          fmt::format("{}: not a JPEG file and the fallback decoder is off", name));
    }
    image = decode_with_stb(bytes, size, name, options, "");
  }
  refuse_if_extreme_aspect(image.width, image.height, name);
  if (options.apply_exif_orientation) apply_exif_orientation(image.exif_orientation, &image);
  return image;
}

std::vector<uint8_t> read_image_file(const std::string& path, const ImageDecodeOptions& options) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ImageDecodeError(fmt::format("{}: is a folder, not an image file", path));
  // A FIFO or a device (from a file list) would block the open or the read: refused.
  if (const auto kind = std::filesystem::status(path, ec).type();
      !ec && kind != std::filesystem::file_type::regular && kind != std::filesystem::file_type::not_found)
    throw ImageDecodeError(fmt::format("{}: is not a regular file", path));
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) {
    throw ImageDecodeError(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  }
  std::streamoff length = file.tellg();
  if (length < 0) throw ImageDecodeError(fmt::format("{}: cannot read its size", path));
  if (length > options.max_file_bytes) {
    throw ImageDecodeError(
        fmt::format("{}: file is {} bytes, above the limit of {} "
                    "(ImageDecodeOptions::max_file_bytes)",
                    path, length, options.max_file_bytes));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(length));
  file.seekg(0);
  if (length > 0 && !file.read(reinterpret_cast<char*>(bytes.data()), length)) {
    throw ImageDecodeError(fmt::format("{}: read failed", path));
  }
  return bytes;
}

DecodedImage decode_image_file(const std::string& path, const ImageDecodeOptions& options) {
  const std::vector<uint8_t> bytes = read_image_file(path, options);
  return decode_image(bytes.data(), bytes.size(), path, options);
}

}  // namespace bam::data
