// The exceptions every image decoder in data/ throws: one type for "this file cannot be decoded".
#pragma once

#include <stdexcept>
#include <string>

namespace bam::data {

// A file that cannot be decoded: damaged, truncated, not an image, too large, or a format no
// decoder here handles. The message starts with the file's name and says what is wrong.
class ImageDecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A well-formed JPEG that our decoder does not handle (progressive, arithmetic coding, 12-bit,
// CMYK, fractional sampling...). decode_image catches it and falls back to stb_image.
class UnsupportedJpegError : public ImageDecodeError {
 public:
  using ImageDecodeError::ImageDecodeError;
};

}  // namespace bam::data
