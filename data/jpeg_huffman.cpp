// Huffman entropy decoding of sequential JPEG scans: table expansion, the bit reader (0xFF00
// stuffing, markers, zero padding past the end), restart markers, and block decoding into
// de-zigzagged coefficients.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include "data/jpeg_internal.h"

namespace bam::data::jpeg_detail {

namespace {

// Sign-extends the `size` raw bits that follow a Huffman code (JPEG's EXTEND, F.2.2.1).
inline int extend(int bits, int size) {
  return bits < (1 << (size - 1)) ? bits - (1 << size) + 1 : bits;
}

}  // namespace

namespace {

std::string expand_huffman_table(const uint8_t counts[16], const uint8_t* symbols, int num_symbols, bool is_dc,
                                 HuffmanTable* table);

// The tables this thread expanded last, by their definition. The files of one folder usually come
// from one encoder and repeat the same few tables (the standard ones of JPEG's Annex K, unless
// optimised per image), and expanding a table (two 1024-entry arrays) took a third of the time of
// decoding a 28 x 28 Fashion-MNIST image. Only tables that expanded without a problem are kept.
struct ExpandedTable {
  bool used = false, is_dc = false;
  int num_symbols = 0;
  std::array<uint8_t, 16> counts{};
  std::array<uint8_t, 256> symbols{};
  HuffmanTable table;
};
constexpr int kKeptTables = 8;
thread_local std::array<ExpandedTable, kKeptTables> t_expanded;
thread_local int t_next_slot = 0;

}  // namespace

std::string build_huffman_table(const uint8_t counts[16], const uint8_t* symbols, int num_symbols,
                                bool is_dc, HuffmanTable* table) {
  for (const ExpandedTable& kept : t_expanded) {
    if (kept.used && kept.is_dc == is_dc && kept.num_symbols == num_symbols &&
        std::memcmp(kept.counts.data(), counts, 16) == 0 &&
        std::memcmp(kept.symbols.data(), symbols, num_symbols) == 0) {
      *table = kept.table;
      return {};
    }
  }
  std::string problem = expand_huffman_table(counts, symbols, num_symbols, is_dc, table);
  if (problem.empty()) {
    ExpandedTable& kept = t_expanded[t_next_slot];
    t_next_slot = (t_next_slot + 1) % kKeptTables;
    kept.used = true;
    kept.is_dc = is_dc;
    kept.num_symbols = num_symbols;
    std::memcpy(kept.counts.data(), counts, 16);
    std::memcpy(kept.symbols.data(), symbols, num_symbols);
    kept.table = *table;
  }
  return problem;
}

namespace {

std::string expand_huffman_table(const uint8_t counts[16], const uint8_t* symbols, int num_symbols, bool is_dc,
                                 HuffmanTable* table) {
  table->lookup.fill(0);
  table->fast_ac.fill(0);
  table->maxcode.fill(-1);
  table->valoffset.fill(0);
  table->symbols.fill(0);
  std::copy(symbols, symbols + num_symbols, table->symbols.begin());
  if (is_dc) {
    for (int i = 0; i < num_symbols; ++i) {
      if (symbols[i] > 15) return fmt::format("DC symbol {} is above 15", symbols[i]);
    }
  }
  int code = 0;
  int k = 0;  // index of the next symbol
  for (int length = 1; length <= 16; ++length) {
    table->valoffset[length] = k - code;
    for (int i = 0; i < counts[length - 1]; ++i, ++k, ++code) {
      // No code may be all ones, nor need more bits than its length (libjpeg rejects both).
      if (code + 1 >= (1 << length))
        return fmt::format("code lengths overflow at length {}", length);
      if (length > kLookaheadBits) continue;
      int shift = kLookaheadBits - length;
      for (int fill = 0; fill < (1 << shift); ++fill) {
        int index = (code << shift) | fill;
        int symbol = symbols[k];
        table->lookup[index] = static_cast<uint16_t>((length << 8) | symbol);
        int run = symbol >> 4;
        int size = symbol & 15;
        if (!is_dc && size != 0 && length + size <= kLookaheadBits) {
          int extra = (index >> (shift - size)) & ((1 << size) - 1);
          int value = extend(extra, size);
          table->fast_ac[index] = static_cast<int32_t>(static_cast<uint32_t>(value) << 16) |
                                  (run << 8) | (length + size);
        }
      }
    }
    if (counts[length - 1] != 0) table->maxcode[length] = code - 1;
    code <<= 1;
  }
  table->maxcode[17] = 0x7FFFFFFF;
  table->defined = true;
  return {};
}

}  // namespace

namespace {

// Reads the entropy-coded bit stream MSB first. When it reaches a marker or the end of the data it
// supplies zero bits, as libjpeg does, and remembers that it did so.
class BitReader {
 public:
  BitReader(const uint8_t* data, size_t pos, size_t size) : data_(data), pos_(pos), size_(size) {}

  // Tops the buffer up to at least 57 bits.
  inline void refill() {
    while (count_ <= 56) {
      if (!at_marker_ && pos_ + 8 <= size_) {
        uint64_t word;
        std::memcpy(&word, data_ + pos_, 8);
        // Bulk path: no byte of the next eight is 0xFF, so none needs unstuffing.
        uint64_t inverted = ~word;
        bool has_ff = ((inverted - 0x0101010101010101ull) & ~inverted & 0x8080808080808080ull) != 0;
        if (!has_ff) {
          if constexpr (std::endian::native == std::endian::little) word = __builtin_bswap64(word);
          int bytes = (64 - count_) >> 3;
          int new_count = count_ + 8 * bytes;
          uint64_t keep = new_count == 64 ? ~uint64_t{0} : ~(~uint64_t{0} >> new_count);
          buffer_ |= (word >> count_) & keep;
          pos_ += bytes;
          count_ = new_count;
          return;
        }
      }
      uint64_t byte = 0;
      if (!at_marker_ && pos_ < size_) {
        byte = data_[pos_];
        if (byte == 0xFF) {
          size_t p = pos_ + 1;
          while (p < size_ && data_[p] == 0xFF) ++p;
          if (p < size_ && data_[p] == 0x00) {
            pos_ = p + 1;  // stuffed 0xFF
          } else {
            at_marker_ = true;  // a marker (pos_ stays on its first 0xFF) or the data ends
            byte = 0;
          }
        } else {
          ++pos_;
        }
      } else {
        at_marker_ = true;
      }
      if (at_marker_) padding_bits_ += 8;
      buffer_ |= byte << (56 - count_);
      count_ += 8;
    }
  }

  inline void ensure(int bits) {
    if (count_ < bits) refill();
  }
  inline uint32_t peek(int bits) const { return static_cast<uint32_t>(buffer_ >> (64 - bits)); }
  inline void consume(int bits) {
    buffer_ <<= bits;
    count_ -= bits;
  }
  inline int get_bits(int bits) {  // 1 <= bits <= 16, after ensure()
    int value = static_cast<int>(peek(bits));
    consume(bits);
    return value;
  }

  // Decodes one Huffman symbol (after ensure(16)); -1 for a code that is not in the table.
  inline int decode(const HuffmanTable& table) {
    uint16_t entry = table.lookup[peek(kLookaheadBits)];
    if (entry != 0) {
      consume(entry >> 8);
      return entry & 0xFF;
    }
    uint32_t bits16 = peek(16);
    for (int length = kLookaheadBits + 1; length <= 16; ++length) {
      int32_t code = static_cast<int32_t>(bits16 >> (16 - length));
      if (code <= table.maxcode[length]) {
        consume(length);
        return table.symbols[(code + table.valoffset[length]) & 0xFF];
      }
    }
    return -1;
  }

  // True once a decode used padding bits, i.e. the data ran out before the symbol did.
  bool overran() const { return padding_bits_ > count_; }
  bool at_marker() const { return at_marker_; }
  size_t position() const { return pos_; }

  // Drops buffered bits and continues at `pos` (after a restart marker).
  void restart_at(size_t pos, bool at_marker) {
    pos_ = pos;
    buffer_ = 0;
    count_ = 0;
    padding_bits_ = 0;
    at_marker_ = at_marker;
  }

 private:
  const uint8_t* data_;
  size_t pos_;
  size_t size_;
  uint64_t buffer_ = 0;  // valid bits left-aligned; bits below them are zero
  int count_ = 0;
  int64_t padding_bits_ = 0;  // zero bits supplied past the data, all at the buffer's end
  bool at_marker_ = false;
};

// Decodes one 8x8 block: DC difference + AC run/size codes, writing natural-order coefficients
// into `block` (already zero). Returns false on a code absent from the tables.
inline bool decode_block(BitReader& reader, const HuffmanTable& dc, const HuffmanTable& ac,
                         int* dc_pred, int16_t* block) {
  reader.ensure(32);
  int size = reader.decode(dc);
  if (size < 0) return false;
  int diff = size != 0 ? extend(reader.get_bits(size), size) : 0;
  // Corrupt files can push the predictor past int range; wrap as libjpeg's int arithmetic does.
  *dc_pred = static_cast<int>(static_cast<uint32_t>(*dc_pred) + static_cast<uint32_t>(diff));
  block[0] = static_cast<int16_t>(*dc_pred);
  for (int k = 1; k < 64;) {
    reader.ensure(32);
    int32_t fast = ac.fast_ac[reader.peek(kLookaheadBits)];
    if (fast != 0) {
      k += (fast >> 8) & 15;
      reader.consume(fast & 0xFF);
      block[kZigzagToNatural[k]] = static_cast<int16_t>(fast >> 16);
      ++k;
      continue;
    }
    int symbol = reader.decode(ac);
    if (symbol < 0) return false;
    int run = symbol >> 4;
    size = symbol & 15;
    if (size == 0) {
      if (run != 15) break;  // end of block
      k += 16;               // sixteen zeros
      continue;
    }
    k += run;
    block[kZigzagToNatural[k]] = static_cast<int16_t>(extend(reader.get_bits(size), size));
    ++k;
  }
  return true;
}

// After a restart interval: find the RSTn marker, as libjpeg's read_restart_marker and
// jpeg_resync_to_restart do, and point the reader after it.
struct RestartOutcome {
  bool consumed;  // a restart marker was taken: the next segment has data
  bool expected;  // it was the RSTn we expected, right where the data ended
  int marker;     // the marker found (0 at the end of the data)
};

RestartOutcome process_restart(ParserState& state, BitReader& reader, int expected) {
  state.pos = reader.position();
  const size_t start = state.pos;
  while (true) {
    int marker = next_marker(state, nullptr);
    size_t marker_pos = state.pos >= 2 ? state.pos - 2 : 0;
    bool is_rst = marker >= kRST0 && marker <= kRST7;
    bool consume;
    if (marker == 0) {
      state.pos = state.size;
      consume = false;
    } else if (marker == kRST0 + expected) {
      consume = true;
    } else if (marker < kSOF0) {
      continue;  // not a valid marker: skip it and look again
    } else if (!is_rst) {
      consume = false;  // a real marker: leave it for the marker parser
    } else if (marker == kRST0 + ((expected + 1) & 7) || marker == kRST0 + ((expected + 2) & 7)) {
      consume = false;  // one of the next restarts: this segment's data was lost
    } else if (marker == kRST0 + ((expected - 1) & 7) || marker == kRST0 + ((expected - 2) & 7)) {
      continue;  // an earlier restart: skip ahead
    } else {
      consume = true;  // too far away to reason about; take it
    }
    bool clean = marker == kRST0 + expected && marker_pos == start;
    if (consume) {
      reader.restart_at(state.pos, false);
    } else {
      if (marker != 0) state.pos = marker_pos;
      reader.restart_at(state.pos, true);
    }
    return {consume, clean, marker};
  }
}

}  // namespace

void decode_scan(ParserState& state, const std::vector<ScanComponent>& scan,
                 const JpegLayout& layout, int16_t* coefficients,
                 std::vector<std::string>* warnings) {
  const int num_scan = static_cast<int>(scan.size());
  const HuffmanTable* dc[kJpegMaxComponents];
  const HuffmanTable* ac[kJpegMaxComponents];
  const JpegComponent* comp[kJpegMaxComponents];
  for (int i = 0; i < num_scan; ++i) {
    dc[i] = &state.dc_tables[scan[i].dc_table];
    ac[i] = &state.ac_tables[scan[i].ac_table];
    comp[i] = &layout.components[scan[i].frame_index];
  }
  // A scan with one component is not interleaved: its MCU is one block, and it covers only the
  // blocks that hold image data (not the padding of the interleaved MCU grid).
  int mcus_x = layout.mcus_x;
  int mcus_y = layout.mcus_y;
  if (num_scan == 1) {
    mcus_x = (comp[0]->width + 7) / 8;
    mcus_y = (comp[0]->height + 7) / 8;
  }
  BitReader reader(state.data, state.pos, state.size);
  int dc_pred[kJpegMaxComponents] = {0, 0, 0};
  int restarts_left = state.restart_interval;
  int next_restart = 0;
  bool out_of_data = false;  // libjpeg's insufficient_data: leave MCUs zero until a restart
  bool warned = false;
  int restart_problems = 0;
  for (int my = 0; my < mcus_y; ++my) {
    for (int mx = 0; mx < mcus_x; ++mx) {
      if (state.restart_interval != 0) {
        if (restarts_left == 0) {
          RestartOutcome outcome = process_restart(state, reader, next_restart);
          if (outcome.consumed) out_of_data = false;
          if (!outcome.expected && restart_problems++ == 0 && warnings) {
            warnings->push_back(
                fmt::format("expected RST{} before MCU ({}, {}), found {}", next_restart, mx, my,
                            outcome.marker == 0 ? std::string("the end of the data")
                                                : fmt::format("marker 0x{:02X}", outcome.marker)));
          }
          next_restart = (next_restart + 1) & 7;
          restarts_left = state.restart_interval;
          for (int& pred : dc_pred) pred = 0;
        }
        --restarts_left;
      }
      if (out_of_data) continue;
      for (int i = 0; i < num_scan; ++i) {
        const JpegComponent& c = *comp[i];
        int bh = num_scan == 1 ? 1 : c.h_samp;
        int bv = num_scan == 1 ? 1 : c.v_samp;
        for (int v = 0; v < bv; ++v) {
          int16_t* row = coefficients + c.coef_offset +
                         (int64_t(my * bv + v) * c.blocks_w + int64_t(mx) * bh) * kJpegBlockSize;
          for (int h = 0; h < bh; ++h) {
            if (!decode_block(reader, *dc[i], *ac[i], &dc_pred[i], row + h * kJpegBlockSize)) {
              fail(state, fmt::format("corrupt entropy-coded data: invalid Huffman code in "
                                      "component {} at MCU ({}, {}) near offset {}",
                                      c.id, mx, my, reader.position()));
            }
          }
        }
      }
      if (reader.overran()) {
        out_of_data = true;
        state.data_ended_early = true;
        if (!warned && warnings) {
          warnings->push_back(fmt::format(
              "scan data ends early at MCU ({}, {}) of {}x{}: the rest of the segment is zero "
              "(gray), as libjpeg does",
              mx, my, mcus_x, mcus_y));
        }
        warned = true;
      }
    }
  }
  if (restart_problems > 1 && warnings) {
    warnings->push_back(
        fmt::format("{} more restart markers missing or out of place", restart_problems - 1));
  }
  state.pos = reader.position();
}

}  // namespace bam::data::jpeg_detail
