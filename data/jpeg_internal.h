// Internals shared by the JPEG decoder's files: parsed header state, Huffman tables, the scan
// decoder's entry point. Not part of the public API (see data/jpeg_decoder.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/jpeg_decoder.h"

// The integer loops of the IDCT and the reconstruction are built twice by GCC on x86-64, for AVX2
// and for the baseline, the one to run picked at load time (target_clones: the same source, so the
// same bits). Not under ThreadSanitizer, whose instrumented ifunc resolvers run before its runtime
// starts and crash the program at load.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define BAM_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BAM_VECTOR_CLONES
#endif

namespace bam::data::jpeg_detail {

// Markers (the byte after 0xFF).
enum Marker : uint8_t {
  kSOF0 = 0xC0,  // baseline sequential, Huffman
  kSOF1 = 0xC1,  // extended sequential, Huffman
  kSOF2 = 0xC2,  // progressive, Huffman
  kSOF3 = 0xC3,  // lossless
  kDHT = 0xC4,
  kSOF5 = 0xC5,  // SOF5..SOF7 differential (hierarchical), SOF9..SOF15 arithmetic (minus DAC)
  kSOF15 = 0xCF,
  kDAC = 0xCC,
  kRST0 = 0xD0,
  kRST7 = 0xD7,
  kSOI = 0xD8,
  kEOI = 0xD9,
  kSOS = 0xDA,
  kDQT = 0xDB,
  kDNL = 0xDC,
  kDRI = 0xDD,
  kAPP0 = 0xE0,
  kAPP1 = 0xE1,
  kAPP14 = 0xEE,
  kCOM = 0xFE,
};

// zigzag index -> natural (row-major) index; 16 extra entries so a corrupt run cannot index past
// the table before the decoder notices it.
extern const std::array<uint8_t, 64 + 16> kZigzagToNatural;

inline constexpr int kLookaheadBits = 10;

// A Huffman table expanded for decoding. Codes of up to kLookaheadBits bits are found with one
// table look-up; longer ones walk maxcode[] (the classic JPEG Annex F procedure).
struct HuffmanTable {
  // Next kLookaheadBits bits -> (code length << 8) | symbol; 0 when the code is longer.
  std::array<uint16_t, 1 << kLookaheadBits> lookup{};
  // AC tables only: next kLookaheadBits bits -> a whole coefficient when its code and its extra
  // bits both fit: (value << 16) | (run << 8) | (code length + extra bits); 0 otherwise.
  std::array<int32_t, 1 << kLookaheadBits> fast_ac{};
  std::array<int32_t, 18> maxcode{};    // largest code of each length, -1 if none; [17] sentinel
  std::array<int32_t, 17> valoffset{};  // symbol index = code + valoffset[length]
  std::array<uint8_t, 256> symbols{};
  bool defined = false;
};

// Builds `table` from a DHT table's 16 counts and its symbols. Returns an empty string, or what
// is wrong with the table.
std::string build_huffman_table(const uint8_t counts[16], const uint8_t* symbols, int num_symbols,
                                bool is_dc, HuffmanTable* table);

struct FrameComponent {
  int id = 0;
  int h_samp = 1;
  int v_samp = 1;
  int quant_table = 0;
  bool quant_latched = false;  // quant copied into the layout at the component's first scan
  bool scanned = false;
};

struct ScanComponent {
  int frame_index = 0;  // index into the frame's components
  int dc_table = 0;
  int ac_table = 0;
};

// What the marker parser has learned so far; the decoder drives it segment by segment.
struct ParserState {
  std::string_view name;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;  // next byte to read

  std::array<std::array<uint16_t, 64>, 4> quant{};  // natural order
  std::array<bool, 4> quant_defined{};
  std::array<HuffmanTable, 4> dc_tables;
  std::array<HuffmanTable, 4> ac_tables;
  int restart_interval = 0;

  bool saw_frame = false;
  int width = 0;
  int height = 0;
  std::vector<FrameComponent> components;

  bool saw_jfif = false;
  bool saw_adobe = false;
  int adobe_transform = 0;
  bool saw_exif = false;
  bool data_ended_early = false;  // a scan ran out of entropy-coded data (decode_scan)
  int exif_orientation = 1;
};

// Throws ImageDecodeError("<name>: <message>").
[[noreturn]] void fail(const ParserState& state, std::string_view message);
[[noreturn]] void fail_unsupported(const ParserState& state, std::string_view message);

// Finds the next marker at or after state.pos (skipping fill bytes and, with a warning, garbage)
// and returns its code with state.pos just past it; returns 0 at the end of the data.
int next_marker(ParserState& state, std::vector<std::string>* warnings);

// Reads the segment of `marker` at state.pos (its length field onward) into the state. SOS is not
// handled here. SOF markers other than SOF0/SOF1 throw UnsupportedJpegError.
void read_segment(ParserState& state, int marker);

// Parses an SOS header at state.pos into `scan`, leaving state.pos at the first data byte.
void read_scan_header(ParserState& state, std::vector<ScanComponent>* scan,
                      std::vector<std::string>* warnings);

// Parses the TIFF structure of an APP1 Exif payload (after "Exif\0\0") for tag 0x0112.
int parse_exif_orientation(const uint8_t* tiff, size_t size);

// Decodes one scan's entropy-coded data into the coefficient buffer, leaving state.pos after the
// data (at the next marker, or at the end).
void decode_scan(ParserState& state, const std::vector<ScanComponent>& scan,
                 const JpegLayout& layout, int16_t* coefficients,
                 std::vector<std::string>* warnings);

// idct_islow_block with the same results, faster: int32 vector lanes where that is exact.
void idct_islow_block_fast(const int16_t* coefficients, const uint16_t* quant, uint8_t* out,
                           ptrdiff_t stride);

}  // namespace bam::data::jpeg_detail
