// FNV-1a, a 64-bit hash of bytes: the same value in every process and on every machine, for ranks
// to compare what they hold (their flags, their host name) without sending it whole.
#pragma once

#include <cstdint>
#include <string_view>

namespace bam {

inline uint64_t fnv1a(std::string_view bytes, uint64_t hash = 1469598103934665603ull) {
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

}  // namespace bam
