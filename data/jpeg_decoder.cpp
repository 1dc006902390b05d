// Drives the JPEG marker parser and the scan decoder: from file bytes to the coefficient layout
// of data/jpeg_decoder.h (frame geometry, limits, colour space, quantisation latching).
#include "data/jpeg_decoder.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "data/jpeg_internal.h"

namespace bam::data {

namespace {

using namespace jpeg_detail;

// The example tables of ITU-T T.81 Annex K.3 (luminance: slot 0, chrominance: slot 1). Motion-JPEG
// frames omit DHT and rely on them; libjpeg-turbo fills empty slots the same way.
constexpr uint8_t kStdDcCounts[2][16] = {{0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
                                         {0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}};
constexpr uint8_t kStdDcSymbols[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
constexpr uint8_t kStdAcCounts[2][16] = {{0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125},
                                         {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119}};
constexpr uint8_t kStdAcLumaHead[] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52,
    0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A};
constexpr uint8_t kStdAcChromaHead[] = {
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
    0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
    0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18,
    0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A};

// After their heads, both AC tables list every remaining run/size pair (runs 4..15, sizes 1..10)
// in increasing order, 162 symbols in all.
std::vector<uint8_t> standard_ac_symbols(int slot) {
  std::vector<uint8_t> symbols;
  if (slot == 0) {
    symbols.assign(std::begin(kStdAcLumaHead), std::end(kStdAcLumaHead));
  } else {
    symbols.assign(std::begin(kStdAcChromaHead), std::end(kStdAcChromaHead));
  }
  for (int run = 4; run <= 15; ++run) {
    for (int size = 1; size <= 10; ++size) {
      uint8_t symbol = static_cast<uint8_t>((run << 4) | size);
      if (std::find(symbols.begin(), symbols.end(), symbol) == symbols.end()) {
        symbols.push_back(symbol);
      }
    }
  }
  return symbols;
}

void ensure_tables(ParserState& state, const ScanComponent& sc) {
  HuffmanTable& dc = state.dc_tables[sc.dc_table];
  HuffmanTable& ac = state.ac_tables[sc.ac_table];
  if (!dc.defined && sc.dc_table <= 1) {
    build_huffman_table(kStdDcCounts[sc.dc_table], kStdDcSymbols, 12, true, &dc);
  }
  if (!ac.defined && sc.ac_table <= 1) {
    std::vector<uint8_t> symbols = standard_ac_symbols(sc.ac_table);
    build_huffman_table(kStdAcCounts[sc.ac_table], symbols.data(), static_cast<int>(symbols.size()),
                        false, &ac);
  }
  if (!dc.defined) fail(state, fmt::format("scan uses undefined DC Huffman table {}", sc.dc_table));
  if (!ac.defined) fail(state, fmt::format("scan uses undefined AC Huffman table {}", sc.ac_table));
}

JpegColorSpace guess_color_space(const ParserState& state, std::vector<std::string>* warnings) {
  // libjpeg's rules (jdapimin.c default_decompress_parms) so that we agree with djpeg.
  if (state.components.size() == 1) return JpegColorSpace::gray;
  if (state.saw_jfif) return JpegColorSpace::ycbcr;
  if (state.saw_adobe) {
    if (state.adobe_transform == 0) return JpegColorSpace::rgb;
    if (state.adobe_transform != 1 && warnings) {
      warnings->push_back(
          fmt::format("unknown Adobe colour transform {}; assuming YCbCr", state.adobe_transform));
    }
    return JpegColorSpace::ycbcr;
  }
  const auto& c = state.components;
  if (c[0].id == 'R' && c[1].id == 'G' && c[2].id == 'B') return JpegColorSpace::rgb;
  return JpegColorSpace::ycbcr;
}

JpegLayout make_layout(const ParserState& state, const JpegDecodeLimits& limits,
                       std::vector<std::string>* warnings) {
  int64_t pixels = int64_t{state.width} * state.height;
  if (pixels > limits.max_pixels) {
    fail(state, fmt::format("image is {}x{} = {} pixels, above the decode limit of {} "
                            "(JpegDecodeLimits::max_pixels)",
                            state.width, state.height, pixels, limits.max_pixels));
  }
  JpegLayout layout{};
  layout.width = state.width;
  layout.height = state.height;
  layout.num_components = static_cast<int32_t>(state.components.size());
  layout.color_space = guess_color_space(state, warnings);
  layout.max_h_samp = 1;
  layout.max_v_samp = 1;
  for (const FrameComponent& c : state.components) {
    layout.max_h_samp = std::max(layout.max_h_samp, c.h_samp);
    layout.max_v_samp = std::max(layout.max_v_samp, c.v_samp);
  }
  for (const FrameComponent& c : state.components) {
    if (layout.max_h_samp % c.h_samp != 0 || layout.max_v_samp % c.v_samp != 0) {
      fail_unsupported(state,
                       fmt::format("component {} sampling {}x{} is not an integral "
                                   "fraction of {}x{}",
                                   c.id, c.h_samp, c.v_samp, layout.max_h_samp, layout.max_v_samp));
    }
  }
  layout.mcu_width = 8 * layout.max_h_samp;
  layout.mcu_height = 8 * layout.max_v_samp;
  layout.mcus_x = (layout.width + layout.mcu_width - 1) / layout.mcu_width;
  layout.mcus_y = (layout.height + layout.mcu_height - 1) / layout.mcu_height;
  layout.exif_orientation = state.exif_orientation;
  int64_t offset = 0;
  for (int i = 0; i < layout.num_components; ++i) {
    const FrameComponent& f = state.components[i];
    JpegComponent& c = layout.components[i];
    c.id = f.id;
    c.h_samp = f.h_samp;
    c.v_samp = f.v_samp;
    c.width = static_cast<int32_t>((int64_t{layout.width} * f.h_samp + layout.max_h_samp - 1) /
                                   layout.max_h_samp);
    c.height = static_cast<int32_t>((int64_t{layout.height} * f.v_samp + layout.max_v_samp - 1) /
                                    layout.max_v_samp);
    c.blocks_w = layout.mcus_x * f.h_samp;
    c.blocks_h = layout.mcus_y * f.v_samp;
    c.coef_offset = offset;
    offset += int64_t{c.blocks_w} * c.blocks_h * kJpegBlockSize;
  }
  layout.num_coefficients = offset;
  // Degenerate shapes (1 x 60000 with 4x4 sampling) pad far beyond their pixel count.
  if (offset > 4 * limits.max_pixels + 65536) {
    fail(state, fmt::format("image is {}x{} but its padded block grid needs {} coefficients, above "
                            "the decode limit",
                            layout.width, layout.height, offset));
  }
  if (limits.refuse_truncated) {
    // Every block of every component is coded (a non-interleaved scan codes the unpadded ones),
    // in 2 bits at least.
    int64_t blocks = 0;
    for (int i = 0; i < layout.num_components; ++i)
      blocks += int64_t{(layout.components[i].width + 7) / 8} * ((layout.components[i].height + 7) / 8);
    const auto left = static_cast<int64_t>(state.size - state.pos);
    if (4 * left < blocks)
      fail(state, fmt::format("incomplete image data: {}x{} pixels need {} bytes of scan data at least, and {} "
                              "bytes are left",
                              layout.width, layout.height, (blocks + 3) / 4, left));
  }
  return layout;
}

}  // namespace

void refuse_if_truncated(const JpegLayout& layout, std::string_view name, const std::vector<std::string>& warnings) {
  if (layout.truncated)
    throw ImageDecodeError(fmt::format("{}: incomplete image data ({})", name, fmt::join(warnings, "; ")));
}

JpegLayout decode_jpeg_coefficients_into(const uint8_t* data, size_t size, std::string_view name,
                                         const JpegCoefficientAllocator& allocate,
                                         std::vector<std::string>* warnings,
                                         const JpegDecodeLimits& limits) {
  ParserState state;
  state.name = name;
  state.data = data;
  state.size = size;
  if (size == 0) fail(state, "empty file (0 bytes)");
  if (size < 2 || data[0] != 0xFF || data[1] != kSOI)
    fail(state, "not a JPEG file (no SOI marker)");
  state.pos = 2;

  JpegLayout layout{};
  int16_t* coefficients = nullptr;
  int scans = 0;
  std::vector<ScanComponent> scan;
  while (true) {
    int marker = next_marker(state, warnings);
    if (marker == 0) {
      if (scans == 0) {
        fail(state, fmt::format("file ends before the first scan ({} bytes{})", size,
                                state.saw_frame ? "" : ", no frame header"));
      }
      if (warnings) warnings->push_back("file ends without an EOI marker");
      break;
    }
    if (marker == kEOI) {
      if (scans == 0) fail(state, "EOI marker before any scan");
      break;
    }
    if ((marker >= kRST0 && marker <= kRST7) || marker == 0x01) continue;  // no payload
    if (marker == kSOI) fail(state, "second SOI marker");
    if (marker != kSOS) {
      read_segment(state, marker);
      continue;
    }
    if (!state.saw_frame) fail(state, "scan (SOS) before the frame header (SOF)");
    if (coefficients == nullptr) {
      layout = make_layout(state, limits, warnings);
      coefficients = allocate(layout);
      if (coefficients == nullptr) fail(state, "coefficient allocation failed");
      std::memset(coefficients, 0, size_t(layout.num_coefficients) * sizeof(int16_t));
    }
    read_scan_header(state, &scan, warnings);
    for (const ScanComponent& sc : scan) {
      FrameComponent& f = state.components[sc.frame_index];
      if (f.scanned) {
        fail(state, fmt::format("component {} appears in two scans of a sequential JPEG", f.id));
      }
      f.scanned = true;
      if (!state.quant_defined[f.quant_table]) {
        fail(state,
             fmt::format("component {} uses undefined quantisation table {}", f.id, f.quant_table));
      }
      std::memcpy(layout.components[sc.frame_index].quant, state.quant[f.quant_table].data(),
                  sizeof(layout.components[0].quant));
      ensure_tables(state, sc);
    }
    decode_scan(state, scan, layout, coefficients, warnings);
    ++scans;
  }
  layout.truncated = state.data_ended_early ? 1 : 0;
  for (const FrameComponent& f : state.components) {
    if (f.scanned) continue;
    layout.truncated = 1;
    if (warnings) warnings->push_back(fmt::format("component {} has no scan; its coefficients are zero", f.id));
  }
  layout.exif_orientation = state.exif_orientation;
  return layout;
}

JpegCoefficients decode_jpeg_coefficients(const uint8_t* data, size_t size, std::string_view name,
                                          const JpegDecodeLimits& limits) {
  JpegCoefficients result;
  result.layout = decode_jpeg_coefficients_into(
      data, size, name,
      [&](const JpegLayout& layout) {
        result.coefficients.resize(size_t(layout.num_coefficients));
        return result.coefficients.data();
      },
      &result.warnings, limits);
  return result;
}

}  // namespace bam::data
