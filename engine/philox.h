// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator. The same (key, counter) gives the same four 32-bit words on the CPU and
// on the GPU, so random draws do not depend on thread count, launch order or device.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/host_device.h"

namespace bam {

struct PhiloxKey {
  uint32_t k0, k1;
};
struct PhiloxBlock {
  uint32_t w[4];
};

BAM_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

BAM_HD PhiloxBlock philox4x32_10(PhiloxBlock counter, PhiloxKey key) {
  const uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  const uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = counter.w[0], c1 = counter.w[1], c2 = counter.w[2], c3 = counter.w[3];
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kMul0, c0, &hi0, &lo0);
    philox_mulhilo(kMul1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// A key from a 64-bit seed.
BAM_HD PhiloxKey philox_key(uint64_t seed) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}

// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
BAM_HD float uniform_from_bits(uint32_t bits) { return (bits >> 8) * (1.0f / 16777216.0f); }
// Uniform in (0, 1]: safe to take the log of.
BAM_HD float uniform_open_zero(uint32_t bits) { return ((bits >> 8) + 1) * (1.0f / 16777216.0f); }

// Two standard normals from two words (Box-Muller).
BAM_HD void normal_pair(uint32_t bits0, uint32_t bits1, float* z0, float* z1) {
  float radius = sqrtf(-2.0f * logf(uniform_open_zero(bits0)));
  float angle = 6.283185307179586f * uniform_from_bits(bits1);
  *z0 = radius * cosf(angle);
  *z1 = radius * sinf(angle);
}

}  // namespace bam
