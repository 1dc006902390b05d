// One reading of whole numbers for every environment variable and flag text the tools take as
// a count: all of the text, decimal, no sign but a leading '-', no spaces, within [lo, hi].
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace bam {

inline std::optional<int64_t> parse_whole_number(std::string_view text, int64_t lo, int64_t hi) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < lo || value > hi)
    return std::nullopt;
  return value;
}

}  // namespace bam
