// Random number generation: a Generator is a Philox key (the seed) plus a counter offset. Each
// draw of n numbers takes the next ceil(n/4) counter blocks, so a stream depends only on
// (seed, offset) and never on threads.
#pragma once

#include <cstdint>
#include <mutex>

#include "engine/philox.h"

namespace bam {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void manual_seed(uint64_t seed) {
    std::lock_guard<std::mutex> lock(mutex_);
    seed_ = seed;
    offset_ = 0;
  }
  void set_offset(uint64_t offset) {
    std::lock_guard<std::mutex> lock(mutex_);
    offset_ = offset;
  }
  // Reserves `blocks` counter blocks and returns the first one's index.
  uint64_t reserve(uint64_t blocks) {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t start = offset_;
    offset_ += blocks;
    return start;
  }
  PhiloxKey key() const { return philox_key(seed_); }

 private:
  std::mutex mutex_;
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

// The process-wide generator used when no generator is passed (the only global RNG state).
Generator& default_generator();
// Reseeds the default generator (and resets its offset).
void manual_seed(uint64_t seed);

// The block for counter index i of a stream: counter = (low 32 bits, high 32 bits, 0, 0).
inline PhiloxBlock philox_block(PhiloxKey key, uint64_t index) {
  return philox4x32_10({{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0u, 0u}}, key);
}

// Inverse of the error function (for truncated normals): an initial approximation refined by
// Newton steps in double.
double erfinv(double y);

}  // namespace bam
