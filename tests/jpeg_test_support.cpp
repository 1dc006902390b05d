// The JPEG suites' helpers (jpeg_test_support.h).
#include "tests/jpeg_test_support.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>

namespace bam::test {

namespace fs = std::filesystem;
using namespace bam::data;

TempDir::TempDir() {
  static int counter = 0;
  path_ = fs::temp_directory_path() / fmt::format("bam_test_jpeg_{}_{}", getpid(), counter++);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("BAM_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    MESSAGE("test_jpeg seed ", s, " (rerun with BAM_TEST_SEED=", s, ")");
    return s;
  }();
  return seed;
}

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
  if (!file) throw std::runtime_error("test support: cannot open " + path);  // not an empty "image"
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(file), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

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

void write_pnm(const std::string& path, int width, int height, int channels, const std::vector<uint8_t>& pixels) {
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
        pixels[(size_t(y) * width + x) * channels + c] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return pixels;
}

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

DecodedImage decode_upright(const std::vector<uint8_t>& bytes, const std::string& name, bool apply_orientation) {
  ImageDecodeOptions options;
  options.apply_exif_orientation = apply_orientation;
  return decode_image(bytes.data(), bytes.size(), name, options);
}

Encoded encode_and_compare(const TempDir& dir, const std::string& ppm, const std::string& args,
                           const std::string& tag) {
  Encoded e;
  e.jpeg_path = dir.file(tag + ".jpg");
  std::string ref_path = dir.file(tag + ".ref.pnm");
  REQUIRE_MESSAGE(run(fmt::format("cjpeg {} -outfile {} {}", args, e.jpeg_path, ppm)) == 0, "cjpeg ", args, " failed");
  REQUIRE_MESSAGE(run(fmt::format("djpeg -ppm -outfile {} {}", ref_path, e.jpeg_path)) == 0, "djpeg failed on ",
                  e.jpeg_path);
  e.reference = read_pnm(ref_path);
  e.ours = decode_upright(read_bytes(e.jpeg_path), e.jpeg_path);
  e.stats = compare_with_reference(e.ours, e.reference);
  return e;
}

// The bit-exactness contract with djpeg: every value identical. (Each step is integer arithmetic
// done as libjpeg does it, whose SIMD paths equal its C code, and our avx2 clones are the same
// source: no CPU can round differently. The tolerance once stated here, max diff 1 on 0.1 % of
// the values, was never used, and would have let an off-by-one in a few blocks pass.)
void check_exact(const Encoded& e, const std::string& what) {
  INFO(what, ": max diff ", e.stats.max_diff, ", identical ", 100 * e.stats.identical_fraction(), " %");
  CHECK_FALSE(e.ours.used_fallback);
  CHECK(e.stats.max_diff == 0);
}

std::string write_synthetic_ppm(const TempDir& dir, int width, int height, int channels, uint64_t seed) {
  std::string path = dir.file(fmt::format("src_{}x{}_{}.pnm", width, height, channels));
  write_pnm(path, width, height, channels, synthetic_image(width, height, channels, seed));
  return path;
}

extern const std::vector<std::pair<int, int>> kSizes;
const std::vector<std::pair<int, int>> kSizes = {{1, 1}, {7, 5}, {17, 33}, {100, 75}, {233, 157}, {500, 375}};

// ---- JPEG surgery for the damaged-file and Exif tests ----

size_t segment_offset(const std::vector<uint8_t>& jpeg, int marker) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xFF) {
    if (jpeg[pos + 1] == marker) return pos;
    if (jpeg[pos + 1] == 0xDA) break;
    pos += 2 + ((size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3]);
  }
  return 0;
}

// Offset of the first byte of entropy-coded data (just after the first SOS segment).
size_t scan_data_offset(const std::vector<uint8_t>& jpeg) {
  const size_t sos = segment_offset(jpeg, 0xDA);
  REQUIRE_MESSAGE(sos > 0, "no SOS found");
  return sos + 2 + ((size_t{jpeg[sos + 2]} << 8) | jpeg[sos + 3]);
}

// Removes every segment with the given marker (before the first scan).
std::vector<uint8_t> remove_segments(const std::vector<uint8_t>& jpeg, int marker) {
  std::vector<uint8_t> out(jpeg.begin(), jpeg.begin() + 2);
  size_t pos = 2;
  while (pos + 4 <= jpeg.size()) {
    int m = jpeg[pos + 1];
    size_t length = (size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3];
    if (m == 0xDA) break;
    if (m != marker) out.insert(out.end(), jpeg.begin() + long(pos), jpeg.begin() + long(pos + 2 + length));
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

Outcome decode_damaged(const std::vector<uint8_t>& bytes, const std::string& name, DecodedImage* image) {
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

}  // namespace bam::test
