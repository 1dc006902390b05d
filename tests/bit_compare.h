// Bit-for-bit comparison of float results, for the tests that hold a fast path (an AVX-512 twin, a
// fused GEMM) to the exact bits of its specification.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace bam::test {

// The elements whose bits differ, and any element one vector has past the other's end. A NaN
// where the other holds a number counts; the same NaN bits on both sides do not.
inline int64_t differing_bits(const std::vector<float>& a, const std::vector<float>& b) {
  const size_t common = a.size() < b.size() ? a.size() : b.size();
  int64_t differ = static_cast<int64_t>((a.size() > b.size() ? a.size() : b.size()) - common);
  for (size_t i = 0; i < common; ++i) differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return differ;
}

}  // namespace bam::test
