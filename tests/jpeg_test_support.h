// Helpers of the JPEG and image-decoding suites (test_jpeg*.cpp, test_image_formats.cpp): a test
// seed, temporary folders, the libjpeg-turbo command-line tools as the reference (cjpeg encodes the
// synthetic corpus, djpeg decodes it), PNM files, decode comparisons, and JPEG surgery (removing
// segments, adding an Exif orientation) for the damaged-file and Exif tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "data/image_decode.h"
#include "data/jpeg_decoder.h"
#include "tests/doctest_text.h"

namespace bam::test {

using data::DecodedImage;

// The suites' random seed (BAM_TEST_SEED overrides it; it is printed either way).
uint64_t test_seed();

// A fresh temporary folder, removed with everything in it at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Runs a shell command (stderr discarded) and returns its exit status.
int run(const std::string& command);
// Fails the test (not skips) when the reference tools are missing.
void require_libjpeg_tools();

std::vector<uint8_t> read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);

struct Pnm {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};
Pnm read_pnm(const std::string& path);
void write_pnm(const std::string& path, int width, int height, int channels, const std::vector<uint8_t>& pixels);

// A natural-ish test picture: smooth colour gradients, a few hard-edged shapes, texture and
// Gaussian noise, so the JPEGs have flat blocks, dense blocks and strong chroma.
std::vector<uint8_t> synthetic_image(int width, int height, int channels, uint64_t seed);

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
DiffStats compare_with_reference(const DecodedImage& image, const Pnm& ref);

DecodedImage decode_upright(const std::vector<uint8_t>& bytes, const std::string& name, bool apply_orientation = false);

// Encodes `ppm` with cjpeg `args`, decodes with us and with djpeg, and returns the comparison.
struct Encoded {
  std::string jpeg_path;
  DecodedImage ours;
  Pnm reference;
  DiffStats stats;
};
Encoded encode_and_compare(const TempDir& dir, const std::string& ppm, const std::string& args, const std::string& tag);

// The bit-exactness contract with djpeg: expected identical; the stated tolerance is max abs
// diff <= 1 with >= 99.9 % of values identical per file.
void check_exact(const Encoded& e, const std::string& what);

std::string write_synthetic_ppm(const TempDir& dir, int width, int height, int channels, uint64_t seed);

// Image sizes of the corpus, from 1x1 to 500x375.
extern const std::vector<std::pair<int, int>> kSizes;

// Offset of the first segment with the given marker (its 0xFF byte), looking no further than the
// first SOS; 0 when there is none.
size_t segment_offset(const std::vector<uint8_t>& jpeg, int marker);
// Offset of the first byte of entropy-coded data (just after the first SOS segment).
size_t scan_data_offset(const std::vector<uint8_t>& jpeg);
// Removes every segment with the given marker (before the first scan).
std::vector<uint8_t> remove_segments(const std::vector<uint8_t>& jpeg, int marker);
// An APP1 Exif segment holding only the orientation tag, in either TIFF byte order.
std::vector<uint8_t> exif_segment(int orientation, bool big_endian);
std::vector<uint8_t> with_exif(const std::vector<uint8_t>& jpeg, int orientation, bool big_endian);

// Decodes damaged bytes: must return a well-formed image or throw ImageDecodeError.
enum class Outcome { decoded, rejected };
Outcome decode_damaged(const std::vector<uint8_t>& bytes, const std::string& name, DecodedImage* image = nullptr);

}  // namespace bam::test
