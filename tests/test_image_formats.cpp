// Exif orientation (on the JPEG path and the stb_image path, against jpegtran's lossless
// transforms) and the non-JPEG formats decoded through the stb_image fallback.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/jpeg_test_support.h"
#include "tests/support.h"

using namespace bam::data;
using namespace bam::test;

TEST_CASE("jpeg: Exif orientations 1-8 match jpegtran's lossless transforms") {
  require_libjpeg_tools();
  TempDir dir;
  // 4:4:4 and a size that is a multiple of the 8x8 block, so jpegtran's transforms are exact in the
  // DCT domain; the only difference left is IDCT rounding (at most a couple of levels).
  const int w = 48, h = 32;
  std::string ppm = write_synthetic_ppm(dir, w, h, 3, test_seed() + 11);
  std::string path = dir.file("upright.jpg");
  REQUIRE(run(fmt::format("cjpeg -quality 95 -sample 1x1 -outfile {} {}", path, ppm)) == 0);
  const std::vector<uint8_t> jpeg = read_bytes(path);
  const char* transforms[9] = {nullptr,      "",           "-flip horizontal", "-rotate 180", "-flip vertical",
                               "-transpose", "-rotate 90", "-transverse",      "-rotate 270"};
  for (int orientation = 1; orientation <= 8; ++orientation) {
    for (bool big_endian : {false, true}) {
      std::vector<uint8_t> tagged = with_exif(jpeg, orientation, big_endian);
      CHECK(read_jpeg_exif_orientation(tagged.data(), tagged.size()) == orientation);
      DecodedImage image = decode_upright(tagged, "tagged.jpg", true);
      CHECK_FALSE(image.used_fallback);
      CHECK(image.exif_orientation == orientation);
      // What a viewer shows: the stored picture transformed by jpegtran, decoded by djpeg.
      std::string moved = dir.file("moved.jpg");
      std::string ref = dir.file("moved.ppm");
      REQUIRE(run(fmt::format("jpegtran -perfect {} -outfile {} {}", transforms[orientation], moved, path)) == 0);
      REQUIRE(run(fmt::format("djpeg -ppm -outfile {} {}", ref, moved)) == 0);
      DiffStats stats = compare_with_reference(image, read_pnm(ref));
      INFO("orientation ", orientation, big_endian ? " (MM)" : " (II)", ": max diff ", stats.max_diff, ", mean ",
           stats.mean());
      CHECK(image.width == (orientation >= 5 ? h : w));
      CHECK(stats.max_diff <= 3);
      CHECK(stats.mean() < 0.5);
    }
  }
  // Orientation off: pixels as stored.
  std::vector<uint8_t> tagged = with_exif(jpeg, 6, false);
  CHECK(decode_upright(tagged, "raw.jpg", false).pixels == decode_upright(jpeg, path).pixels);
}

TEST_CASE("jpeg: Exif orientation is applied on the stb_image path too") {
  require_libjpeg_tools();
  TempDir dir;
  std::string ppm = write_synthetic_ppm(dir, 40, 24, 3, test_seed() + 3);
  std::string path = dir.file("prog.jpg");
  REQUIRE(run(fmt::format("cjpeg -progressive -quality 90 -outfile {} {}", path, ppm)) == 0);
  std::vector<uint8_t> jpeg = read_bytes(path);
  DecodedImage stored = decode_upright(jpeg, path);
  for (int orientation = 1; orientation <= 8; ++orientation) {
    DecodedImage rotated = decode_upright(with_exif(jpeg, orientation, true), "p.jpg", true);
    CHECK(rotated.used_fallback);
    CHECK(rotated.exif_orientation == orientation);
    // Check the corners land where each orientation puts them.
    auto px = [](const DecodedImage& im, int x, int y) {
      const uint8_t* p = &im.pixels[(size_t(y) * im.width + x) * 3];
      return std::array<uint8_t, 3>{p[0], p[1], p[2]};
    };
    const int W = stored.width, H = stored.height;
    auto top_left = px(stored, 0, 0), top_right = px(stored, W - 1, 0);
    const int rw = rotated.width, rh = rotated.height;
    // Where the stored top-left and top-right pixels appear after the transform.
    std::pair<int, int> tl, tr;
    // clang-format off
    switch (orientation) {
      case 1: tl = {0, 0}; tr = {rw - 1, 0}; break;
      case 2: tl = {rw - 1, 0}; tr = {0, 0}; break;
      case 3: tl = {rw - 1, rh - 1}; tr = {0, rh - 1}; break;
      case 4: tl = {0, rh - 1}; tr = {rw - 1, rh - 1}; break;
      case 5: tl = {0, 0}; tr = {0, rh - 1}; break;
      case 6: tl = {rw - 1, 0}; tr = {rw - 1, rh - 1}; break;
      case 7: tl = {rw - 1, rh - 1}; tr = {rw - 1, 0}; break;
      case 8: tl = {0, rh - 1}; tr = {0, 0}; break;
    }
    // clang-format on
    INFO("orientation ", orientation);
    CHECK(rotated.width == (orientation >= 5 ? H : W));
    CHECK(px(rotated, tl.first, tl.second) == top_left);
    CHECK(px(rotated, tr.first, tr.second) == top_right);
  }
}

TEST_CASE("image: stb_image fallback decodes BMP and PGM exactly") {
  TempDir dir;
  const int w = 13, h = 6;
  std::vector<uint8_t> rgb = synthetic_image(w, h, 3, test_seed() + 1);
  // A 24-bit bottom-up BMP, rows padded to 4 bytes.
  int row_bytes = (w * 3 + 3) & ~3;
  uint32_t size = 54 + uint32_t(row_bytes) * h;
  std::vector<uint8_t> bmp(size, 0);
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bmp[at + i] = uint8_t(v >> (8 * i));
  };
  bmp[0] = 'B';
  bmp[1] = 'M';
  put32(2, size);
  put32(10, 54);
  put32(14, 40);
  put32(18, w);
  put32(22, h);
  bmp[26] = 1;
  bmp[28] = 24;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = &rgb[(size_t(h - 1 - y) * w + x) * 3];
      uint8_t* q = &bmp[54 + size_t(y) * row_bytes + x * 3];
      q[0] = p[2];
      q[1] = p[1];
      q[2] = p[0];
    }
  }
  DecodedImage image = decode_upright(bmp, "image.bmp");
  CHECK(image.used_fallback);
  CHECK(image.width == w);
  CHECK(image.height == h);
  CHECK(image.pixels == rgb);

  std::vector<uint8_t> gray = synthetic_image(w, h, 1, test_seed() + 2);
  std::string pgm = dir.file("g.pgm");
  write_pnm(pgm, w, h, 1, gray);
  DecodedImage g = decode_image_file(pgm);
  REQUIRE(g.pixels.size() == gray.size() * 3);
  for (size_t i = 0; i < gray.size(); ++i) {
    CHECK(g.pixels[3 * i] == gray[i]);
    CHECK(g.pixels[3 * i + 1] == gray[i]);
    CHECK(g.pixels[3 * i + 2] == gray[i]);
  }
}

namespace {
std::vector<uint8_t> bytes_of(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }
std::string decode_error(const std::vector<uint8_t>& file, const char* name) {
  return error_of([&] { (void)decode_image(file.data(), file.size(), name, ImageDecodeOptions{}); });
}
}  // namespace

TEST_CASE("image: PGM/PPM by bam's decoder: 8 and 16 bits, maxval scaling, comments; damaged headers refused") {
  // 2x1 PPM with a comment, maxval 255.
  std::vector<uint8_t> ppm = bytes_of("P6\n# made by hand\n2 1\n255\n");
  for (uint8_t v : {10, 20, 30, 40, 50, 60}) ppm.push_back(v);
  DecodedImage rgb = decode_image(ppm.data(), ppm.size(), "two.ppm", ImageDecodeOptions{});
  CHECK_FALSE(rgb.used_fallback);
  CHECK(std::string(rgb.decoder) == "bam's PGM/PPM decoder");
  CHECK(rgb.pixels == std::vector<uint8_t>{10, 20, 30, 40, 50, 60});
  // 16-bit PGM, big-endian, scaled as PIL: round(v * 255 / 65535); gray replicated.
  std::vector<uint8_t> pgm16 = bytes_of("P5 3 1 65535 ");
  for (uint16_t v : {uint16_t{0}, uint16_t{32768}, uint16_t{65535}}) {
    pgm16.push_back(uint8_t(v >> 8));
    pgm16.push_back(uint8_t(v & 255));
  }
  DecodedImage gray = decode_image(pgm16.data(), pgm16.size(), "deep.pgm", ImageDecodeOptions{});
  CHECK(gray.pixels == std::vector<uint8_t>{0, 0, 0, 128, 128, 128, 255, 255, 255});
  // maxval 15: 15 -> 255, 7 -> round(7 * 17) = 119.
  std::vector<uint8_t> pgm15 = bytes_of("P5\n2 1\n15\n");
  pgm15.push_back(15);
  pgm15.push_back(7);
  CHECK(decode_image(pgm15.data(), pgm15.size(), "low.pgm", ImageDecodeOptions{}).pixels ==
        std::vector<uint8_t>{255, 255, 255, 119, 119, 119});

  // stb_image read past its buffer on this 19-byte file (a segfault in a loader thread).
  CHECK(decode_error(bytes_of("P5\n4000 4000\n65535\n"), "short.pgm") ==
        "short.pgm: PNM file is truncated: 4000x4000 pixels need 32000000 bytes of samples, it has 0");
  CHECK(decode_error(bytes_of("P6\n4 \n"), "cut.ppm") == "cut.ppm: PNM header has no height (damaged or truncated)");
  CHECK(decode_error(bytes_of("P5 1 1 70000 xx"), "wide.pgm") ==
        "wide.pgm: PNM maximum value 70000 is outside 1..65535");
  CHECK(decode_error(bytes_of("P5 1 1 15 \x20"), "above.pgm") ==
        "above.pgm: PNM sample 32 is above the maximum value 15");
  CHECK(decode_error(bytes_of("P5 0 7 255 "), "none.pgm") == "none.pgm: PNM image is 0x7, without pixels");
  // A line of pixels is refused (its evaluation resize would be 256 x 512,256 pixels).
  std::vector<uint8_t> line = bytes_of("P5 2001 1 255 ");
  line.resize(line.size() + 2001, 7);
  CHECK(decode_error(line, "line.pgm") == "line.pgm: image is 2001x1, its sides more than 1000 to 1 apart");
}

TEST_CASE("image: formats stb would parse but torchvision folders never hold are refused, a truncated HDR at once") {
  // stb_image looped forever on this truncated Radiance file (CVE-2021-42715); named .jpg, as a
  // folder may hold it, it must still be an error and not a hung loader thread.
  std::vector<uint8_t> hdr = bytes_of("#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 8\n");
  for (uint8_t b : {2, 2, 0, 8}) hdr.push_back(b);
  CHECK(decode_error(hdr, "sun.jpg").find("sun.jpg: not a decodable image") == 0);
  CHECK(decode_error(bytes_of("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), "anim.gif")
            .find("anim.gif: not a decodable image") == 0);
}
