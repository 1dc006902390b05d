// The JPEG decoder against libjpeg-turbo's command-line tools: a corpus of synthetic images is
// encoded with cjpeg at test time and every decode is compared with `djpeg -ppm` of the same file;
// unusual sampling, restarts, progressive/arithmetic files (passed to stb_image), the coefficient
// output and the fast IDCT.
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

using namespace bam::data;
using namespace bam::test;

TEST_CASE("jpeg: bit-exact with djpeg across sizes, qualities and sampling factors") {
  require_libjpeg_tools();
  TempDir dir;
  const uint64_t seed = test_seed();
  const std::vector<std::string> samplings = {"1x1", "2x1", "2x2", "1x2", "4x1"};
  const std::vector<int> qualities = {50, 75, 90, 100};
  DiffStats total;
  int files = 0;
  for (auto [w, h] : kSizes) {
    std::string rgb = write_synthetic_ppm(dir, w, h, 3, seed + w * 1000 + h);
    std::string gray = write_synthetic_ppm(dir, w, h, 1, seed + w * 1000 + h + 7);
    for (int q : qualities) {
      for (const std::string& s : samplings) {
        std::string tag = fmt::format("c{}x{}_q{}_s{}", w, h, q, s);
        Encoded e = encode_and_compare(dir, rgb, fmt::format("-quality {} -sample {}", q, s), tag);
        check_exact(e, tag);
        total.merge(e.stats);
        ++files;
      }
      std::string tag = fmt::format("g{}x{}_q{}", w, h, q);
      Encoded e = encode_and_compare(dir, gray, fmt::format("-quality {} -grayscale", q), tag);
      check_exact(e, tag);
      // Grayscale output is three identical channels.
      bool replicated = true;
      for (size_t i = 0; i < e.ours.pixels.size(); i += 3) {
        replicated &= e.ours.pixels[i] == e.ours.pixels[i + 1] && e.ours.pixels[i] == e.ours.pixels[i + 2];
      }
      CHECK(replicated);
      total.merge(e.stats);
      ++files;
    }
  }
  MESSAGE(fmt::format("sampling sweep: {} files, {} values, max diff {}, {:.4f} % identical", files, total.values,
                      total.max_diff, 100 * total.identical_fraction()));
  CHECK(files == int(kSizes.size() * qualities.size() * (samplings.size() + 1)));
}

TEST_CASE("jpeg: unusual sampling, restarts, optimised tables, DCT variants, multi-scan") {
  require_libjpeg_tools();
  TempDir dir;
  const uint64_t seed = test_seed();
  std::string scans_separate = dir.file("separate.scans");
  std::string scans_mixed = dir.file("mixed.scans");
  write_bytes(scans_separate, {'0', ';', '\n', '1', ';', '\n', '2', ';', '\n'});
  write_bytes(scans_mixed, {'0', ';', '\n', '1', ' ', '2', ';', '\n'});
  const std::vector<std::string> variants = {"-sample 4x2",
                                             "-sample 1x4",
                                             "-sample 3x1",
                                             "-sample 3x2",
                                             "-sample 2x4",
                                             "-sample 2x2,2x1,1x1",  // Cb at 1x2 ratio (vertical fancy), Cr at 2x2
                                             "-sample 2x1,1x2,1x1",  // luma itself upsampled vertically
                                             "-sample 1x1,2x2,1x1",  // chroma larger than luma
                                             "-sample 2x2 -restart 1",
                                             "-sample 2x2 -restart 1B",
                                             "-sample 2x1 -restart 3B",
                                             "-sample 1x1 -restart 2",
                                             "-grayscale -restart 5B",
                                             "-optimize",
                                             "-sample 2x2 -optimize",
                                             "-dct int",
                                             "-dct fast",
                                             "-dct float",
                                             "-sample 2x2 -scans " + scans_separate,
                                             "-sample 2x2 -scans " + scans_mixed,
                                             "-grayscale -optimize -restart 1B",
                                             "-rgb",
                                             "-rgb -sample 2x2"};
  const std::vector<std::pair<int, int>> sizes = {{7, 5}, {17, 33}, {233, 157}, {500, 375}};
  DiffStats total;
  int files = 0;
  for (auto [w, h] : sizes) {
    std::string rgb = write_synthetic_ppm(dir, w, h, 3, seed ^ (w * 31 + h));
    for (size_t v = 0; v < variants.size(); ++v) {
      std::string tag = fmt::format("v{}_{}x{}", v, w, h);
      Encoded e = encode_and_compare(dir, rgb, "-quality 85 " + variants[v], tag);
      check_exact(e, variants[v] + " " + tag);
      total.merge(e.stats);
      ++files;
    }
  }
  MESSAGE(fmt::format("variant sweep: {} files, {} values, max diff {}, {:.4f} % identical", files, total.values,
                      total.max_diff, 100 * total.identical_fraction()));
}

TEST_CASE("jpeg: progressive and arithmetic files are passed to stb_image") {
  require_libjpeg_tools();
  TempDir dir;
  const uint64_t seed = test_seed();
  DiffStats total;
  int files = 0;
  for (auto [w, h] : kSizes) {
    std::string rgb = write_synthetic_ppm(dir, w, h, 3, seed + 99 * w + h);
    for (std::string args : {"-progressive -sample 2x2", "-progressive -sample 1x1", "-progressive -sample 2x1",
                             "-progressive -grayscale"}) {
      std::string tag = fmt::format("p{}_{}x{}", files, w, h);
      Encoded e = encode_and_compare(dir, rgb, fmt::format("-quality 90 {}", args), tag);
      CHECK(e.ours.used_fallback);
      // stb_image has its own IDCT, upsampling and colour conversion: close to djpeg, not equal.
      // Stated tolerance: mean abs diff <= 1 (for images at least 16 px wide), and at most 0.5 %
      // of values (or one column's worth, for tiny images) off by more than 8.
      // (The largest differences sit in the last column of odd-width 4:2:x images, where stb
      // upsamples chroma from its padding; 50 levels happen there. In a 7 px wide image that
      // column is a seventh of the values, so its mean can pass 1 for some random contents.)
      INFO(args, " ", tag, ": max diff ", e.stats.max_diff, ", mean ", e.stats.mean(),
           ", beyond 8: ", e.stats.beyond_8);
      if (w >= 16) CHECK(e.stats.mean() <= 1.0);
      CHECK(e.stats.beyond_8 <= std::max<size_t>(e.stats.values / 200, 3 * size_t(h)));
      total.merge(e.stats);
      ++files;

      // Without the fallback, our decoder reports the file as unsupported.
      std::vector<uint8_t> bytes = read_bytes(e.jpeg_path);
      ImageDecodeOptions strict;
      strict.allow_fallback = false;
      CHECK_THROWS_AS(decode_image(bytes.data(), bytes.size(), tag, strict), UnsupportedJpegError);
    }
  }
  MESSAGE(
      fmt::format("progressive via stb: {} files, max diff {}, mean diff {:.4f}, {:.2f} % "
                  "identical, {:.3f} % off by more than 8",
                  files, total.max_diff, total.mean(), 100 * total.identical_fraction(),
                  100.0 * double(total.beyond_8) / double(total.values)));

  // Arithmetic coding: neither decoder handles it; the error says why.
  std::string ppm = write_synthetic_ppm(dir, 64, 48, 3, seed);
  std::string path = dir.file("arith.jpg");
  REQUIRE(run(fmt::format("cjpeg -arithmetic -outfile {} {}", path, ppm)) == 0);
  std::vector<uint8_t> bytes = read_bytes(path);
  try {
    decode_upright(bytes, path);
    FAIL("arithmetic-coded JPEG decoded");
  } catch (const ImageDecodeError& error) {
    std::string message = error.what();
    CHECK(message.find(path) == 0);
    CHECK(message.find("arithmetic") != std::string::npos);
  }
}

TEST_CASE("jpeg: coefficient layout, quantisation tables and the two decode entry points") {
  require_libjpeg_tools();
  TempDir dir;
  // Custom quantisation tables (natural order in the file cjpeg reads) must come back verbatim.
  std::string qtables = dir.file("q.txt");
  std::string text;
  uint16_t luma_q[64], chroma_q[64];
  for (int i = 0; i < 64; ++i) {
    luma_q[i] = uint16_t(1 + i);
    chroma_q[i] = uint16_t(2 + (i * 7) % 50);
    text += fmt::format("{}{}", luma_q[i], i % 8 == 7 ? "\n" : " ");
  }
  for (int i = 0; i < 64; ++i) text += fmt::format("{}{}", chroma_q[i], i % 8 == 7 ? "\n" : " ");
  write_bytes(qtables, std::vector<uint8_t>(text.begin(), text.end()));
  std::string ppm = write_synthetic_ppm(dir, 233, 157, 3, test_seed());
  std::string path = dir.file("layout.jpg");
  REQUIRE(run(fmt::format("cjpeg -qtables {} -qslots 0,1,1 -sample 2x2 -outfile {} {}", qtables, path, ppm)) == 0);
  std::vector<uint8_t> bytes = read_bytes(path);
  JpegCoefficients coefficients = decode_jpeg_coefficients(bytes.data(), bytes.size(), path);
  const JpegLayout& layout = coefficients.layout;
  CHECK(layout.width == 233);
  CHECK(layout.height == 157);
  CHECK(layout.num_components == 3);
  CHECK(layout.color_space == JpegColorSpace::ycbcr);
  CHECK(layout.max_h_samp == 2);
  CHECK(layout.max_v_samp == 2);
  CHECK(layout.mcu_width == 16);
  CHECK(layout.mcus_x == 15);  // ceil(233 / 16)
  CHECK(layout.mcus_y == 10);  // ceil(157 / 16)
  CHECK(layout.components[0].blocks_w == 30);
  CHECK(layout.components[0].blocks_h == 20);
  CHECK(layout.components[1].blocks_w == 15);
  CHECK(layout.components[1].width == 117);  // ceil(233 / 2)
  CHECK(layout.components[2].height == 79);
  CHECK(layout.components[0].coef_offset == 0);
  CHECK(layout.components[1].coef_offset == 30 * 20 * 64);
  CHECK(layout.components[2].coef_offset == 30 * 20 * 64 + 15 * 10 * 64);
  CHECK(layout.num_coefficients == (30 * 20 + 2 * 15 * 10) * 64);
  CHECK(coefficients.coefficients.size() == size_t(layout.num_coefficients));
  CHECK(std::equal(luma_q, luma_q + 64, layout.components[0].quant));
  CHECK(std::equal(chroma_q, chroma_q + 64, layout.components[1].quant));
  CHECK(std::equal(chroma_q, chroma_q + 64, layout.components[2].quant));

  // Decoding into caller memory gives the same coefficients (the buffer is poisoned first).
  std::vector<int16_t> external;
  JpegLayout layout2 = decode_jpeg_coefficients_into(bytes.data(), bytes.size(), path, [&](const JpegLayout& l) {
    external.assign(size_t(l.num_coefficients), int16_t(0x5A5A));
    return external.data();
  });
  CHECK(layout2.num_coefficients == layout.num_coefficients);
  CHECK(external == coefficients.coefficients);

  // Reconstruction of the coefficients is what decode_image returns.
  std::vector<uint8_t> rgb(size_t(layout.width) * layout.height * 3, 0xA5);
  jpeg_reconstruct_rgb(layout, coefficients.coefficients.data(), rgb.data());
  CHECK(rgb == decode_upright(bytes, path).pixels);

  // A flat image: every block is DC only, DC = round((v - 128) * 8 / q[0]).
  std::vector<uint8_t> flat(size_t(40) * 24, 200);
  std::string flat_pgm = dir.file("flat.pgm");
  write_pnm(flat_pgm, 40, 24, 1, flat);
  std::string flat_jpg = dir.file("flat.jpg");
  REQUIRE(run(fmt::format("cjpeg -grayscale -quality 50 -outfile {} {}", flat_jpg, flat_pgm)) == 0);
  std::vector<uint8_t> flat_bytes = read_bytes(flat_jpg);
  JpegCoefficients flat_coefs = decode_jpeg_coefficients(flat_bytes.data(), flat_bytes.size(), "f");
  CHECK(flat_coefs.layout.color_space == JpegColorSpace::gray);
  int q0 = flat_coefs.layout.components[0].quant[0];
  int expected_dc = int(std::lround((200 - 128) * 8.0 / q0));
  int nonzero_ac = 0;
  for (size_t i = 0; i < flat_coefs.coefficients.size(); ++i) {
    if (i % 64 == 0) {
      CHECK(flat_coefs.coefficients[i] == expected_dc);
    } else {
      nonzero_ac += flat_coefs.coefficients[i] != 0;
    }
  }
  CHECK(nonzero_ac == 0);
}

TEST_CASE("jpeg: the fast IDCT equals the reference idct_islow_block on every block") {
  // jpeg_component_plane runs int32 vector lanes and falls back to the 64-bit reference when a
  // block's values could overflow; both must agree everywhere, including corrupt-data extremes.
  std::mt19937_64 rng(test_seed());
  const int num_blocks = 3000;
  JpegLayout layout{};
  layout.width = 8 * num_blocks;
  layout.height = 8;
  layout.num_components = 1;
  layout.color_space = JpegColorSpace::gray;
  layout.max_h_samp = layout.max_v_samp = 1;
  layout.mcu_width = layout.mcu_height = 8;
  layout.mcus_x = num_blocks;
  layout.mcus_y = 1;
  JpegComponent& comp = layout.components[0];
  comp.h_samp = comp.v_samp = 1;
  comp.width = layout.width;
  comp.height = 8;
  comp.blocks_w = num_blocks;
  comp.blocks_h = 1;
  layout.num_coefficients = int64_t{num_blocks} * 64;
  int mismatches = 0;
  for (int regime = 0; regime < 5; ++regime) {
    // 0: typical photo blocks; 1: large but valid; 2: random int16 with 8-bit tables (corrupt
    // data); 3: random int16 with 16-bit tables; 4: dequantised values just past what int32
    // lanes can take (the overflow guard must send these to the reference).
    for (uint16_t& q : comp.quant) q = uint16_t(regime == 3 ? 1 + rng() % 65535 : 1 + rng() % 60);
    if (regime == 4) std::fill(std::begin(comp.quant), std::end(comp.quant), uint16_t{2});
    std::vector<int16_t> coefficients(size_t(layout.num_coefficients));
    for (size_t i = 0; i < coefficients.size(); ++i) {
      int k = int(i % 64);
      switch (regime) {
        case 0: coefficients[i] = int16_t(k < 10 || rng() % 5 == 0 ? int(rng() % 31) - 15 : 0); break;
        case 1: coefficients[i] = int16_t(int(rng() % 161) - 80); break;
        case 4: {  // every other block all positive: the sums then align and grow largest
          int sign = (i / 64) % 2 == 0 || rng() % 2 ? 1 : -1;
          coefficients[i] = int16_t(sign * (17500 + int(rng() % 2500)));
          break;
        }
        default: coefficients[i] = int16_t(rng()); break;
      }
      if (k != 0 && rng() % 7 == 0) coefficients[i] = 0;
    }
    std::vector<uint8_t> plane(size_t(num_blocks) * 64, 0x5A);
    jpeg_component_plane(layout, 0, coefficients.data(), plane.data());
    for (int b = 0; b < num_blocks; ++b) {
      uint8_t reference[64];
      idct_islow_block(&coefficients[size_t(b) * 64], comp.quant, reference, 8);
      for (int r = 0; r < 8; ++r) {
        mismatches += std::memcmp(reference + 8 * r, &plane[size_t(r) * num_blocks * 8 + b * 8], 8) != 0;
      }
    }
  }
  CHECK(mismatches == 0);
}
