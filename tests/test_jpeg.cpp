// Tests of the JPEG decoder and decode_image against libjpeg-turbo's command-line tools: a corpus
// of synthetic images is encoded with cjpeg at test time and every decode is compared with
// `djpeg -ppm` of the same file. Damaged files must decode or throw ImageDecodeError, never crash.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/image_decode.h"
#include "data/jpeg_decoder.h"

namespace fs = std::filesystem;
using namespace bam::data;

namespace {

// ---- Helpers: seeds, temp dirs, tools, PNM files ----

uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("BAM_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    MESSAGE("test_jpeg seed ", s, " (rerun with BAM_TEST_SEED=", s, ")");
    return s;
  }();
  return seed;
}

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / fmt::format("bam_test_jpeg_{}_{}", getpid(), counter++);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

int run(const std::string& command) {
  int status = std::system((command + " 2>/dev/null").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Fails the test (not skips) when the reference tools are missing.
void require_libjpeg_tools() {
  bool ok = run("cjpeg -version >/dev/null") == 0 && run("djpeg -version >/dev/null") == 0 &&
            run("jpegtran -version >/dev/null") == 0;
  REQUIRE_MESSAGE(ok,
                  "cjpeg/djpeg/jpegtran not found: install them with "
                  "`apt-get install libjpeg-turbo-progs` (the JPEG tests compare against them)");
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(file), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

struct Pnm {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

Pnm read_pnm(const std::string& path) {
  std::vector<uint8_t> bytes = read_bytes(path);
  Pnm pnm;
  size_t pos = 0;
  auto token = [&]() {
    std::string t;
    while (pos < bytes.size()) {
      char c = static_cast<char>(bytes[pos]);
      if (c == '#') {
        while (pos < bytes.size() && bytes[pos] != '\n') ++pos;
      } else if (std::isspace(static_cast<unsigned char>(c))) {
        if (!t.empty()) break;
        ++pos;
      } else {
        t += c;
        ++pos;
      }
    }
    return t;
  };
  std::string magic = token();
  REQUIRE_MESSAGE((magic == "P5" || magic == "P6"), path, " is not a binary PNM");
  pnm.channels = magic == "P6" ? 3 : 1;
  pnm.width = std::stoi(token());
  pnm.height = std::stoi(token());
  REQUIRE(std::stoi(token()) == 255);
  ++pos;  // the single whitespace byte after maxval
  size_t n = size_t(pnm.width) * pnm.height * pnm.channels;
  REQUIRE(bytes.size() >= pos + n);
  pnm.pixels.assign(bytes.begin() + long(pos), bytes.begin() + long(pos + n));
  return pnm;
}

void write_pnm(const std::string& path, int width, int height, int channels,
               const std::vector<uint8_t>& pixels) {
  std::string header = fmt::format("P{}\n{} {}\n255\n", channels == 3 ? 6 : 5, width, height);
  std::vector<uint8_t> bytes(header.begin(), header.end());
  bytes.insert(bytes.end(), pixels.begin(), pixels.end());
  write_bytes(path, bytes);
}

// A natural-ish test picture: smooth colour gradients, a few hard-edged shapes, texture and
// Gaussian noise, so the JPEGs have flat blocks, dense blocks and strong chroma.
std::vector<uint8_t> synthetic_image(int width, int height, int channels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 6.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double phase[3] = {uniform(rng) * 6, uniform(rng) * 6, uniform(rng) * 6};
  double cx = uniform(rng) * width, cy = uniform(rng) * height;
  double radius = (0.2 + 0.2 * uniform(rng)) * std::min(width, height) + 1;
  std::vector<uint8_t> pixels(size_t(width) * height * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      bool in_disc = std::hypot(x - cx, y - cy) < radius;
      bool in_bar = (x / 9 + y / 23) % 4 == 0;
      for (int c = 0; c < channels; ++c) {
        double v = 128 + 90 * std::sin(x * 0.031 + phase[c]) * std::cos(y * 0.027 - phase[c]);
        v += 20 * std::sin((x + 2 * y) * 0.4 + c);  // texture
        if (in_disc) v = 255 - v * (0.6 + 0.2 * c);
        if (in_bar) v *= 0.45;
        v += noise(rng);
        pixels[(size_t(y) * width + x) * channels + c] =
            static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return pixels;
}

struct DiffStats {
  size_t values = 0;
  size_t identical = 0;
  size_t beyond_8 = 0;  // values that differ by more than 8 levels
  int max_diff = 0;
  double sum_diff = 0;
  void add(int a, int b) {
    int d = std::abs(a - b);
    ++values;
    identical += d == 0;
    beyond_8 += d > 8;
    max_diff = std::max(max_diff, d);
    sum_diff += d;
  }
  void merge(const DiffStats& o) {
    values += o.values;
    identical += o.identical;
    beyond_8 += o.beyond_8;
    max_diff = std::max(max_diff, o.max_diff);
    sum_diff += o.sum_diff;
  }
  double identical_fraction() const { return values ? double(identical) / values : 1.0; }
  double mean() const { return values ? sum_diff / values : 0.0; }
};

// Compares an RGB decode with djpeg's PPM (or PGM, whose value must appear in all 3 channels).
DiffStats compare_with_reference(const DecodedImage& image, const Pnm& ref) {
  REQUIRE(image.width == ref.width);
  REQUIRE(image.height == ref.height);
  REQUIRE(image.pixels.size() == size_t(ref.width) * ref.height * 3);
  DiffStats stats;
  for (size_t i = 0; i < size_t(ref.width) * ref.height; ++i) {
    for (int c = 0; c < 3; ++c) {
      int want = ref.channels == 3 ? ref.pixels[3 * i + c] : ref.pixels[i];
      stats.add(image.pixels[3 * i + c], want);
    }
  }
  return stats;
}

DecodedImage decode_upright(const std::vector<uint8_t>& bytes, const std::string& name,
                            bool apply_orientation = false) {
  ImageDecodeOptions options;
  options.apply_exif_orientation = apply_orientation;
  return decode_image(bytes.data(), bytes.size(), name, options);
}

// Encodes `ppm` with cjpeg `args`, decodes with us and with djpeg, and returns the comparison.
struct Encoded {
  std::string jpeg_path;
  DecodedImage ours;
  Pnm reference;
  DiffStats stats;
};

Encoded encode_and_compare(const TempDir& dir, const std::string& ppm, const std::string& args,
                           const std::string& tag) {
  Encoded e;
  e.jpeg_path = dir.file(tag + ".jpg");
  std::string ref_path = dir.file(tag + ".ref.pnm");
  REQUIRE_MESSAGE(run(fmt::format("cjpeg {} -outfile {} {}", args, e.jpeg_path, ppm)) == 0,
                  "cjpeg ", args, " failed");
  REQUIRE_MESSAGE(run(fmt::format("djpeg -ppm -outfile {} {}", ref_path, e.jpeg_path)) == 0,
                  "djpeg failed on ", e.jpeg_path);
  e.reference = read_pnm(ref_path);
  e.ours = decode_upright(read_bytes(e.jpeg_path), e.jpeg_path);
  e.stats = compare_with_reference(e.ours, e.reference);
  return e;
}

// The bit-exactness contract with djpeg: expected identical; the stated tolerance is max abs
// diff <= 1 with >= 99.9 % of values identical per file.
void check_exact(const Encoded& e, const std::string& what) {
  INFO(what, ": max diff ", e.stats.max_diff, ", identical ", 100 * e.stats.identical_fraction(),
       " %");
  CHECK_FALSE(e.ours.used_fallback);
  CHECK(e.stats.max_diff <= 1);
  CHECK(e.stats.identical_fraction() >= 0.999);
}

std::string write_synthetic_ppm(const TempDir& dir, int width, int height, int channels,
                                uint64_t seed) {
  std::string path = dir.file(fmt::format("src_{}x{}_{}.pnm", width, height, channels));
  write_pnm(path, width, height, channels, synthetic_image(width, height, channels, seed));
  return path;
}

const std::vector<std::pair<int, int>> kSizes = {{1, 1},    {7, 5},     {17, 33},
                                                 {100, 75}, {233, 157}, {500, 375}};

// ---- JPEG surgery for the damaged-file and Exif tests ----

// Offset of the first byte of entropy-coded data (just after the first SOS segment).
size_t scan_data_offset(const std::vector<uint8_t>& jpeg) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size()) {
    REQUIRE(jpeg[pos] == 0xFF);
    int marker = jpeg[pos + 1];
    size_t length = (size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3];
    if (marker == 0xDA) return pos + 2 + length;
    pos += 2 + length;
  }
  FAIL("no SOS found");
  return 0;
}

// Removes every segment with the given marker (before the first scan).
std::vector<uint8_t> remove_segments(const std::vector<uint8_t>& jpeg, int marker) {
  std::vector<uint8_t> out(jpeg.begin(), jpeg.begin() + 2);
  size_t pos = 2;
  while (pos + 4 <= jpeg.size()) {
    int m = jpeg[pos + 1];
    size_t length = (size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3];
    if (m == 0xDA) break;
    if (m != marker)
      out.insert(out.end(), jpeg.begin() + long(pos), jpeg.begin() + long(pos + 2 + length));
    pos += 2 + length;
  }
  out.insert(out.end(), jpeg.begin() + long(pos), jpeg.end());
  return out;
}

// An APP1 Exif segment holding only the orientation tag, in either TIFF byte order.
std::vector<uint8_t> exif_segment(int orientation, bool big_endian) {
  std::vector<uint8_t> tiff;
  auto u16 = [&](uint32_t v) {
    if (big_endian) {
      tiff.push_back(uint8_t(v >> 8));
      tiff.push_back(uint8_t(v));
    } else {
      tiff.push_back(uint8_t(v));
      tiff.push_back(uint8_t(v >> 8));
    }
  };
  auto u32 = [&](uint32_t v) {
    if (big_endian) {
      u16(v >> 16);
      u16(v & 0xFFFF);
    } else {
      u16(v & 0xFFFF);
      u16(v >> 16);
    }
  };
  tiff.push_back(big_endian ? 'M' : 'I');
  tiff.push_back(big_endian ? 'M' : 'I');
  u16(42);
  u32(8);       // IFD0 right after the header
  u16(2);       // two entries: an unrelated one first, then orientation
  u16(0x010F);  // Make, ASCII, 4 bytes inline
  u16(2);
  u32(4);
  tiff.insert(tiff.end(), {'b', 'a', 'm', 0});
  u16(0x0112);
  u16(3);  // SHORT
  u32(1);
  u16(uint32_t(orientation));
  u16(0);
  u32(0);  // no next IFD
  std::vector<uint8_t> segment = {0xFF, 0xE1, 0, 0, 'E', 'x', 'i', 'f', 0, 0};
  segment.insert(segment.end(), tiff.begin(), tiff.end());
  size_t length = segment.size() - 2;
  segment[2] = uint8_t(length >> 8);
  segment[3] = uint8_t(length);
  return segment;
}

std::vector<uint8_t> with_exif(const std::vector<uint8_t>& jpeg, int orientation, bool big_endian) {
  std::vector<uint8_t> out(jpeg.begin(), jpeg.begin() + 2);
  std::vector<uint8_t> segment = exif_segment(orientation, big_endian);
  out.insert(out.end(), segment.begin(), segment.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

// Decodes damaged bytes: must return a well-formed image or throw ImageDecodeError.
enum class Outcome { decoded, rejected };
Outcome decode_damaged(const std::vector<uint8_t>& bytes, const std::string& name,
                       DecodedImage* image = nullptr) {
  try {
    ImageDecodeOptions options;
    options.apply_exif_orientation = false;
    options.max_pixels = int64_t{1} << 22;  // damaged headers can claim large sizes; keep it quick
    DecodedImage decoded = decode_image(bytes.data(), bytes.size(), name, options);
    REQUIRE(decoded.width > 0);
    REQUIRE(decoded.height > 0);
    REQUIRE(decoded.pixels.size() == size_t(decoded.width) * decoded.height * 3);
    if (image) *image = std::move(decoded);
    return Outcome::decoded;
  } catch (const ImageDecodeError& error) {
    std::string message = error.what();
    CHECK_MESSAGE(message.rfind(name, 0) == 0, "error does not name the file: ", message);
    return Outcome::rejected;
  }
}

}  // namespace

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
        replicated &=
            e.ours.pixels[i] == e.ours.pixels[i + 1] && e.ours.pixels[i] == e.ours.pixels[i + 2];
      }
      CHECK(replicated);
      total.merge(e.stats);
      ++files;
    }
  }
  MESSAGE(fmt::format("sampling sweep: {} files, {} values, max diff {}, {:.4f} % identical", files,
                      total.values, total.max_diff, 100 * total.identical_fraction()));
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
  const std::vector<std::string> variants = {
      "-sample 4x2",
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
  MESSAGE(fmt::format("variant sweep: {} files, {} values, max diff {}, {:.4f} % identical", files,
                      total.values, total.max_diff, 100 * total.identical_fraction()));
}

TEST_CASE("jpeg: progressive and arithmetic files are passed to stb_image") {
  require_libjpeg_tools();
  TempDir dir;
  const uint64_t seed = test_seed();
  DiffStats total;
  int files = 0;
  for (auto [w, h] : kSizes) {
    std::string rgb = write_synthetic_ppm(dir, w, h, 3, seed + 99 * w + h);
    for (std::string args : {"-progressive -sample 2x2", "-progressive -sample 1x1",
                             "-progressive -sample 2x1", "-progressive -grayscale"}) {
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
  REQUIRE(run(fmt::format("cjpeg -qtables {} -qslots 0,1,1 -sample 2x2 -outfile {} {}", qtables,
                          path, ppm)) == 0);
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
  JpegLayout layout2 =
      decode_jpeg_coefficients_into(bytes.data(), bytes.size(), path, [&](const JpegLayout& l) {
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
        case 0:
          coefficients[i] = int16_t(k < 10 || rng() % 5 == 0 ? int(rng() % 31) - 15 : 0);
          break;
        case 1:
          coefficients[i] = int16_t(int(rng() % 161) - 80);
          break;
        case 4: {  // every other block all positive: the sums then align and grow largest
          int sign = (i / 64) % 2 == 0 || rng() % 2 ? 1 : -1;
          coefficients[i] = int16_t(sign * (17500 + int(rng() % 2500)));
          break;
        }
        default:
          coefficients[i] = int16_t(rng());
          break;
      }
      if (k != 0 && rng() % 7 == 0) coefficients[i] = 0;
    }
    std::vector<uint8_t> plane(size_t(num_blocks) * 64, 0x5A);
    jpeg_component_plane(layout, 0, coefficients.data(), plane.data());
    for (int b = 0; b < num_blocks; ++b) {
      uint8_t reference[64];
      idct_islow_block(&coefficients[size_t(b) * 64], comp.quant, reference, 8);
      for (int r = 0; r < 8; ++r) {
        mismatches +=
            std::memcmp(reference + 8 * r, &plane[size_t(r) * num_blocks * 8 + b * 8], 8) != 0;
      }
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("jpeg: missing DHT falls back to the standard tables (Motion-JPEG)") {
  require_libjpeg_tools();
  TempDir dir;
  std::string ppm = write_synthetic_ppm(dir, 100, 75, 3, test_seed());
  std::string path = dir.file("mjpeg.jpg");
  // Without -optimize cjpeg writes the standard Annex K tables, so dropping them is lossless.
  REQUIRE(run(fmt::format("cjpeg -quality 80 -sample 2x1 -outfile {} {}", path, ppm)) == 0);
  std::vector<uint8_t> bytes = read_bytes(path);
  std::vector<uint8_t> stripped = remove_segments(bytes, 0xC4);
  REQUIRE(stripped.size() < bytes.size());
  CHECK(decode_upright(stripped, "stripped").pixels == decode_upright(bytes, path).pixels);
}

TEST_CASE("jpeg: truncated files decode like djpeg or fail before the first scan") {
  require_libjpeg_tools();
  TempDir dir;
  std::string ppm = write_synthetic_ppm(dir, 233, 157, 3, test_seed() + 5);
  int files = 0, exact = 0, rejected = 0;
  DiffStats total;
  for (std::string args : {"-sample 2x2", "-sample 2x1 -restart 1", "-grayscale -restart 2B",
                           "-sample 1x1 -optimize"}) {
    std::string path = dir.file("full.jpg");
    REQUIRE(run(fmt::format("cjpeg -quality 90 {} -outfile {} {}", args, path, ppm)) == 0);
    std::vector<uint8_t> bytes = read_bytes(path);
    const size_t data_start = scan_data_offset(bytes);
    for (size_t cut = 0; cut < bytes.size(); cut += cut < data_start + 64 ? 7 : 97) {
      std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + long(cut));
      std::string name = fmt::format("cut{}.jpg", cut);
      DecodedImage image;
      Outcome outcome = decode_damaged(truncated, name, &image);
      INFO(args, " cut at ", cut, " (scan data starts at ", data_start, ")");
      if (cut < data_start) {
        CHECK(outcome == Outcome::rejected);  // no scan: an error, not a gray image
        ++rejected;
        continue;
      }
      REQUIRE(outcome == Outcome::decoded);  // libjpeg pads missing scan data with zeros; so do we
      CHECK_FALSE(image.warnings.empty());
      std::string cut_path = dir.file(name);
      write_bytes(cut_path, truncated);
      std::string ref_path = dir.file("cut.pnm");
      int rc = run(fmt::format("djpeg -ppm -outfile {} {}", ref_path, cut_path));
      REQUIRE((rc == 0 || rc == 2));  // 2: djpeg finished with warnings
      DiffStats stats = compare_with_reference(image, read_pnm(ref_path));
      // The block where data runs out is decoded from zero bits; libjpeg-turbo's SIMD IDCT can
      // round such garbage blocks differently, so allow a few blocks to differ.
      CHECK(stats.identical_fraction() >= 0.99);
      exact += stats.identical == stats.values;
      total.merge(stats);
      ++files;
    }
  }
  MESSAGE(
      fmt::format("truncation: {} cut before the first scan (all rejected), {} cut in scan data "
                  "decoded, {} identical to djpeg, {:.4f} % of values identical",
                  rejected, files, exact, 100 * total.identical_fraction()));
  CHECK(exact >= files * 9 / 10);
}

TEST_CASE("jpeg: corrupted bytes decode or throw ImageDecodeError, never crash") {
  require_libjpeg_tools();
  TempDir dir;
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  std::string ppm = write_synthetic_ppm(dir, 100, 75, 3, seed);
  int decoded = 0, rejected = 0;
  for (std::string args : {"-sample 2x2", "-sample 2x1 -restart 1B", "-grayscale",
                           "-sample 1x2 -optimize -restart 2"}) {
    std::string path = dir.file("good.jpg");
    REQUIRE(run(fmt::format("cjpeg -quality 75 {} -outfile {} {}", args, path, ppm)) == 0);
    std::vector<uint8_t> bytes = read_bytes(path);
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<uint8_t> damaged = bytes;
      int flips = 1 + int(rng() % 8);
      // Half the trials hit the headers, where damage changes the structure.
      size_t span = trial % 2 ? std::min<size_t>(damaged.size(), 700) : damaged.size();
      for (int f = 0; f < flips; ++f) damaged[rng() % span] = uint8_t(rng());
      std::string name = fmt::format("flip_{}_{}.jpg", trial, args);
      (decode_damaged(damaged, name) == Outcome::decoded ? decoded : rejected)++;
    }
  }
  MESSAGE(fmt::format("corruption (seed {}): {} decoded, {} rejected with ImageDecodeError", seed,
                      decoded, rejected));
  CHECK(decoded + rejected == 1200);
}

TEST_CASE("jpeg: hostile inputs are refused with messages that name the file and the problem") {
  require_libjpeg_tools();
  TempDir dir;
  std::string ppm = write_synthetic_ppm(dir, 100, 75, 3, test_seed());
  std::string path = dir.file("base.jpg");
  REQUIRE(run(fmt::format("cjpeg -quality 75 -sample 2x2 -outfile {} {}", path, ppm)) == 0);
  const std::vector<uint8_t> good = read_bytes(path);

  auto expect_error = [](const std::vector<uint8_t>& bytes, const std::string& name,
                         const std::string& phrase, ImageDecodeOptions options = {}) {
    try {
      decode_image(bytes.data(), bytes.size(), name, options);
      FAIL("decoded ", name, " which should have been refused");
    } catch (const ImageDecodeError& error) {
      std::string message = error.what();
      INFO(message);
      CHECK(message.rfind(name + ": ", 0) == 0);
      CHECK(message.find(phrase) != std::string::npos);
    }
  };

  expect_error({}, "empty.jpg", "empty file");
  std::string text = "this is a text file, not an image\n";
  expect_error(std::vector<uint8_t>(text.begin(), text.end()), "notes.txt",
               "not a decodable image");
  expect_error({0xFF, 0xD8}, "soi_only.jpg", "before the first scan");

  // SOF claiming 65535 x 65535: refused before any allocation.
  std::vector<uint8_t> huge = good;
  for (size_t i = 2; i + 9 < huge.size(); ++i) {
    if (huge[i] == 0xFF && huge[i + 1] == 0xC0) {
      huge[i + 5] = huge[i + 6] = huge[i + 7] = huge[i + 8] = 0xFF;
      break;
    }
  }
  expect_error(huge, "huge.jpg", "above the decode limit");
  // A configurable limit: this 100x75 image is over a 1000-pixel budget.
  ImageDecodeOptions small;
  small.max_pixels = 1000;
  expect_error(good, "budget.jpg", "above the decode limit", small);

  // Missing SOS: the headers and then EOI.
  size_t data_start = scan_data_offset(good);
  // The SOS segment of a 3-component scan is 14 bytes long; keep what precedes it.
  std::vector<uint8_t> no_sos(good.begin(), good.begin() + long(data_start - 14));
  no_sos.push_back(0xFF);
  no_sos.push_back(0xD9);
  expect_error(no_sos, "no_sos.jpg", "EOI marker before any scan");

  // A DHT whose code lengths overflow: three 1-bit codes (moved from a longer length, so the
  // symbol count still matches the segment).
  std::vector<uint8_t> bad_dht = good;
  for (size_t i = 2; i + 21 < bad_dht.size(); ++i) {
    if (bad_dht[i] == 0xFF && bad_dht[i + 1] == 0xC4) {
      uint8_t* counts = &bad_dht[i + 5];
      int donor = 1;
      while (donor < 16 && counts[donor] < 3) ++donor;
      REQUIRE(donor < 16);
      counts[donor] -= 3;
      counts[0] += 3;
      break;
    }
  }
  expect_error(bad_dht, "bad_dht.jpg", "bad Huffman table");

  // Scan data of all one bits: no valid Huffman code is all ones.
  std::vector<uint8_t> garbage(good.begin(), good.begin() + long(data_start));
  for (int i = 0; i < 200; ++i) {
    garbage.push_back(0xFF);
    garbage.push_back(0x00);
  }
  garbage.push_back(0xFF);
  garbage.push_back(0xD9);
  expect_error(garbage, "garbage.jpg", "invalid Huffman code");

  // A quantisation table that is never defined.
  expect_error(remove_segments(good, 0xDB), "no_dqt.jpg", "undefined quantisation table");

  // Not a JPEG at all, with the fallback off.
  ImageDecodeOptions strict;
  strict.allow_fallback = false;
  expect_error(std::vector<uint8_t>(text.begin(), text.end()), "strict.txt", "not a JPEG", strict);

  // Files: a missing path is named in the error.
  CHECK_THROWS_WITH_AS(decode_image_file(dir.file("missing.jpg")),
                       doctest::Contains("missing.jpg: cannot open"), ImageDecodeError);
  DecodedImage from_file = decode_image_file(path);
  CHECK(from_file.pixels == decode_upright(good, path).pixels);
}

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
  const char* transforms[9] = {nullptr,          "",           "-flip horizontal", "-rotate 180",
                               "-flip vertical", "-transpose", "-rotate 90",       "-transverse",
                               "-rotate 270"};
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
      REQUIRE(run(fmt::format("jpegtran -perfect {} -outfile {} {}", transforms[orientation], moved,
                              path)) == 0);
      REQUIRE(run(fmt::format("djpeg -ppm -outfile {} {}", ref, moved)) == 0);
      DiffStats stats = compare_with_reference(image, read_pnm(ref));
      INFO("orientation ", orientation, big_endian ? " (MM)" : " (II)", ": max diff ",
           stats.max_diff, ", mean ", stats.mean());
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
