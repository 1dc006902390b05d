// JPEG header parsing: finding markers, reading DQT/DHT/SOF/SOS/DRI/APPn segments, and the Exif
// orientation tag. Every read is bounds-checked; problems throw ImageDecodeError naming the file.
#include <fmt/format.h>

#include <cstring>

#include "data/jpeg_internal.h"

namespace bam::data::jpeg_detail {

const std::array<uint8_t, 64 + 16> kZigzagToNatural = {
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    // A corrupt run can push the index up to 78; like libjpeg, such values land on 63.
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};

void fail(const ParserState& state, std::string_view message) {
  throw ImageDecodeError(fmt::format("{}: {}", state.name, message));
}

void fail_unsupported(const ParserState& state, std::string_view message) {
  throw UnsupportedJpegError(fmt::format("{}: {}", state.name, message));
}

namespace {

uint32_t read_u16(const uint8_t* p) {
  return (uint32_t{p[0]} << 8) | p[1];
}

// The payload of the segment at state.pos: checks the length field and advances past the segment.
struct Segment {
  const uint8_t* data;
  size_t size;
};

Segment take_segment(ParserState& state, int marker) {
  if (state.pos + 2 > state.size) {
    fail(state, fmt::format("file ends inside the length of marker 0x{:02X} (offset {})", marker,
                            state.pos));
  }
  size_t length = read_u16(state.data + state.pos);
  if (length < 2) {
    fail(state, fmt::format("marker 0x{:02X} at offset {} has invalid length {}", marker, state.pos,
                            length));
  }
  if (state.pos + length > state.size) {
    fail(state, fmt::format("file ends inside marker 0x{:02X} segment (offset {}, length {}, "
                            "file size {})",
                            marker, state.pos, length, state.size));
  }
  Segment segment{state.data + state.pos + 2, length - 2};
  state.pos += length;
  return segment;
}

void read_dqt(ParserState& state, Segment seg) {
  size_t i = 0;
  while (i < seg.size) {
    int precision = seg.data[i] >> 4;
    int id = seg.data[i] & 15;
    ++i;
    if (id > 3) fail(state, fmt::format("DQT defines table {} (only 0..3 exist)", id));
    if (precision > 1)
      fail(state, fmt::format("DQT table {} has precision code {}", id, precision));
    size_t bytes = precision == 0 ? 64 : 128;
    if (i + bytes > seg.size) fail(state, fmt::format("DQT table {} is cut short", id));
    for (int k = 0; k < 64; ++k) {
      uint16_t value = precision == 0 ? seg.data[i + k] : read_u16(seg.data + i + 2 * k);
      state.quant[id][kZigzagToNatural[k]] = value;
    }
    state.quant_defined[id] = true;
    i += bytes;
  }
}

void read_dht(ParserState& state, Segment seg) {
  size_t i = 0;
  while (i < seg.size) {
    int table_class = seg.data[i] >> 4;
    int id = seg.data[i] & 15;
    ++i;
    if (table_class > 1 || id > 3) {
      fail(state, fmt::format("DHT defines class {} table {} (classes 0..1, tables 0..3)",
                              table_class, id));
    }
    if (i + 16 > seg.size) fail(state, "DHT segment is cut short");
    const uint8_t* counts = seg.data + i;
    int num_symbols = 0;
    for (int k = 0; k < 16; ++k) num_symbols += counts[k];
    i += 16;
    if (num_symbols > 256 || i + num_symbols > seg.size) {
      fail(state, fmt::format("DHT table {} declares {} symbols but the segment holds {}", id,
                              num_symbols, seg.size - i));
    }
    HuffmanTable& table = table_class == 0 ? state.dc_tables[id] : state.ac_tables[id];
    std::string problem =
        build_huffman_table(counts, seg.data + i, num_symbols, table_class == 0, &table);
    if (!problem.empty()) {
      fail(state, fmt::format("bad Huffman table ({} table {}): {}", table_class == 0 ? "DC" : "AC",
                              id, problem));
    }
    i += num_symbols;
  }
}

void read_sof(ParserState& state, int marker, Segment seg) {
  if (state.saw_frame) fail(state, "second frame header (SOF) in one image");
  if (seg.size < 6) fail(state, "SOF segment is cut short");
  int precision = seg.data[0];
  int height = static_cast<int>(read_u16(seg.data + 1));
  int width = static_cast<int>(read_u16(seg.data + 3));
  int num_components = seg.data[5];
  if (seg.size != 6 + 3 * size_t(num_components)) {
    fail(state, fmt::format("SOF length does not match its {} components", num_components));
  }
  if (precision != 8) {
    fail_unsupported(state, fmt::format("{}-bit JPEG (only 8-bit is decoded here)", precision));
  }
  if (height == 0) fail_unsupported(state, "height defined by a DNL marker");
  if (width == 0) fail(state, "frame header says width 0");
  if (num_components == 4) fail_unsupported(state, "4-component (CMYK/YCCK) JPEG");
  if (num_components != 1 && num_components != 3) {
    fail_unsupported(state, fmt::format("JPEG with {} components", num_components));
  }
  (void)marker;
  state.components.clear();
  for (int c = 0; c < num_components; ++c) {
    const uint8_t* p = seg.data + 6 + 3 * c;
    FrameComponent comp;
    comp.id = p[0];
    comp.h_samp = p[1] >> 4;
    comp.v_samp = p[1] & 15;
    comp.quant_table = p[2];
    if (comp.h_samp < 1 || comp.h_samp > 4 || comp.v_samp < 1 || comp.v_samp > 4) {
      fail(state, fmt::format("component {} has sampling factors {}x{} (each must be 1..4)",
                              comp.id, comp.h_samp, comp.v_samp));
    }
    if (comp.quant_table > 3) {
      fail(state,
           fmt::format("component {} uses quantisation table {}", comp.id, comp.quant_table));
    }
    state.components.push_back(comp);
  }
  state.width = width;
  state.height = height;
  state.saw_frame = true;
}

void read_app(ParserState& state, int marker, Segment seg) {
  // Length minimums as in libjpeg (examine_app0/app14), so the colour-space guess agrees with it.
  if (marker == kAPP0 && seg.size >= 14 && std::memcmp(seg.data, "JFIF\0", 5) == 0) {
    state.saw_jfif = true;
  } else if (marker == kAPP14 && seg.size >= 12 && std::memcmp(seg.data, "Adobe", 5) == 0) {
    state.saw_adobe = true;
    state.adobe_transform = seg.data[11];
  } else if (marker == kAPP1 && seg.size >= 6 && std::memcmp(seg.data, "Exif\0\0", 6) == 0 &&
             !state.saw_exif) {
    state.saw_exif = true;
    state.exif_orientation = parse_exif_orientation(seg.data + 6, seg.size - 6);
  }
}

}  // namespace

int next_marker(ParserState& state, std::vector<std::string>* warnings) {
  size_t discarded = 0;
  while (state.pos < state.size) {
    if (state.data[state.pos] != 0xFF) {
      ++state.pos;
      ++discarded;
      continue;
    }
    size_t p = state.pos + 1;
    while (p < state.size && state.data[p] == 0xFF) ++p;  // fill bytes
    if (p >= state.size) break;
    if (state.data[p] == 0x00) {  // stuffed zero: data, not a marker
      discarded += p + 1 - state.pos;
      state.pos = p + 1;
      continue;
    }
    if (discarded != 0 && warnings) {
      warnings->push_back(
          fmt::format("{} extraneous bytes before marker 0x{:02X}", discarded, state.data[p]));
    }
    state.pos = p + 1;
    return state.data[p];
  }
  state.pos = state.size;
  return 0;
}

void read_segment(ParserState& state, int marker) {
  if (marker == kSOF0 || marker == kSOF1) {
    read_sof(state, marker, take_segment(state, marker));
    return;
  }
  if (marker == kSOF2) fail_unsupported(state, "progressive JPEG");
  if (marker == kSOF3) fail_unsupported(state, "lossless JPEG");
  if (marker >= kSOF5 && marker <= kSOF15 && marker != kDHT && marker != kDAC && marker != 0xC8) {
    bool arithmetic = marker >= 0xC9;
    bool hierarchical = marker == 0xC5 || marker == 0xC6 || marker == 0xC7 || marker == 0xCD ||
                        marker == 0xCE || marker == 0xCF;
    fail_unsupported(state, fmt::format("JPEG with SOF{}{}{}", marker - kSOF0,
                                        arithmetic ? " (arithmetic coding)" : "",
                                        hierarchical ? " (hierarchical)" : ""));
  }
  Segment seg = take_segment(state, marker);
  switch (marker) {
    case kDQT:
      read_dqt(state, seg);
      break;
    case kDHT:
      read_dht(state, seg);
      break;
    case kDRI:
      if (seg.size != 2) fail(state, "DRI segment has the wrong length");
      state.restart_interval = static_cast<int>(read_u16(seg.data));
      break;
    default:
      if (marker >= kAPP0 && marker <= 0xEF) read_app(state, marker, seg);
      break;  // COM, DNL, JPG extensions, DAC: skipped
  }
}

void read_scan_header(ParserState& state, std::vector<ScanComponent>* scan,
                      std::vector<std::string>* warnings) {
  Segment seg = take_segment(state, kSOS);
  if (seg.size < 1) fail(state, "SOS segment is empty");
  int n = seg.data[0];
  if (n < 1 || n > static_cast<int>(state.components.size()) || seg.size != 4 + 2 * size_t(n)) {
    fail(state, fmt::format("SOS lists {} components (frame has {}) or has the wrong length", n,
                            state.components.size()));
  }
  scan->clear();
  for (int i = 0; i < n; ++i) {
    int id = seg.data[1 + 2 * i];
    int tables = seg.data[2 + 2 * i];
    int index = -1;
    for (size_t c = 0; c < state.components.size(); ++c) {
      bool taken = false;
      for (const ScanComponent& s : *scan) taken |= s.frame_index == static_cast<int>(c);
      if (state.components[c].id == id && !taken) {
        index = static_cast<int>(c);
        break;
      }
    }
    if (index < 0) fail(state, fmt::format("SOS names component {} twice or not in the frame", id));
    ScanComponent sc;
    sc.frame_index = index;
    sc.dc_table = tables >> 4;
    sc.ac_table = tables & 15;
    if (sc.dc_table > 3 || sc.ac_table > 3) {
      fail(state,
           fmt::format("SOS selects Huffman tables {}/{} (0..3 exist)", sc.dc_table, sc.ac_table));
    }
    scan->push_back(sc);
  }
  const uint8_t* tail = seg.data + 1 + 2 * n;
  if ((tail[0] != 0 || tail[1] != 63 || tail[2] != 0) && warnings) {
    warnings->push_back(
        fmt::format("sequential scan with Ss={} Se={} Ah/Al=0x{:02X}; decoded as a "
                    "full sequential scan",
                    tail[0], tail[1], tail[2]));
  }
}

int parse_exif_orientation(const uint8_t* tiff, size_t size) {
  if (size < 8) return 1;
  bool little;
  if (tiff[0] == 'I' && tiff[1] == 'I') {
    little = true;
  } else if (tiff[0] == 'M' && tiff[1] == 'M') {
    little = false;
  } else {
    return 1;
  }
  auto u16 = [&](size_t at) -> uint32_t {
    return little ? (tiff[at] | (uint32_t{tiff[at + 1]} << 8))
                  : ((uint32_t{tiff[at]} << 8) | tiff[at + 1]);
  };
  auto u32 = [&](size_t at) -> uint32_t {
    return little ? (u16(at) | (u16(at + 2) << 16)) : ((u16(at) << 16) | u16(at + 2));
  };
  if (u16(2) != 42) return 1;
  size_t ifd = u32(4);
  if (ifd > size || size - ifd < 2) return 1;
  size_t count = u16(ifd);
  for (size_t i = 0; i < count; ++i) {
    size_t entry = ifd + 2 + 12 * i;
    if (entry + 12 > size) break;
    if (u16(entry) != 0x0112) continue;
    uint32_t type = u16(entry + 2);
    uint32_t value = 0;
    if (type == 3) {  // SHORT: the value sits in the first two bytes of the value field
      value = u16(entry + 8);
    } else if (type == 4) {  // LONG, seen from some writers
      value = u32(entry + 8);
    } else {
      return 1;
    }
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

}  // namespace bam::data::jpeg_detail

namespace bam::data {

int read_jpeg_exif_orientation(const uint8_t* data, size_t size) {
  using namespace jpeg_detail;
  if (size < 4 || data[0] != 0xFF || data[1] != kSOI) return 1;
  ParserState state;
  state.data = data;
  state.size = size;
  state.pos = 2;
  while (true) {
    int marker = next_marker(state, nullptr);
    if (marker == 0 || marker == kSOS || marker == kEOI) return 1;
    if ((marker >= kRST0 && marker <= kRST7) || marker == 0x01 || marker == kSOI) continue;
    if (state.pos + 2 > size) return 1;
    size_t length = (size_t{data[state.pos]} << 8) | data[state.pos + 1];
    if (length < 2 || state.pos + length > size) return 1;
    const uint8_t* payload = data + state.pos + 2;
    size_t payload_size = length - 2;
    state.pos += length;
    if (marker == kAPP1 && payload_size >= 6 && std::memcmp(payload, "Exif\0\0", 6) == 0) {
      return parse_exif_orientation(payload + 6, payload_size - 6);
    }
  }
}

}  // namespace bam::data
