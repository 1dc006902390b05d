// libFuzzer target for the JPEG decoder: arbitrary bytes go through decode_image with the stb
// fallback off (so only our code is explored) and through the Exif reader. Any crash, sanitizer
// report, hang or runaway allocation is a finding; ImageDecodeError is the expected way to fail.
// Built and run by scripts/fuzz-jpeg.sh.
#include <cstddef>
#include <cstdint>

#include "data/image_decode.h"
#include "data/jpeg_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bam::data::ImageDecodeOptions options;
  options.allow_fallback = false;
  options.max_pixels = int64_t{1} << 18;  // keeps each input fast; the limit logic is still tested
  try {
    bam::data::DecodedImage image = bam::data::decode_image(data, size, "fuzz-input", options);
    if (image.width <= 0 || image.height <= 0 ||
        image.pixels.size() != size_t(image.width) * size_t(image.height) * 3) {
      __builtin_trap();  // a decode that "succeeds" must return a well-formed image
    }
  } catch (const bam::data::ImageDecodeError&) {
  }
  int orientation = bam::data::read_jpeg_exif_orientation(data, size);
  if (orientation < 1 || orientation > 8) __builtin_trap();
  return 0;
}
