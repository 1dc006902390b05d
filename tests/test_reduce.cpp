// The f32 sum over a middle axis (kernels/cpu/reduce.h) adds each output's terms in double, in
// order: bit for bit what a plain loop gives, on whichever path this CPU takes (the AVX-512 column
// sums, or the portable loop), for widths around the 16- and 64-column steps and the 256-column
// tasks.
#include <random>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/reduce.h"
#include "tests/doctest_text.h"

TEST_CASE("reduce<float> sum: column sums are the in-order double sums, bit for bit") {
  MESSAGE("column sums on ", bam::cpu::cpu_has_avx512() ? "AVX-512" : "the portable loop");
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> dist(-1000.0f, 1000.0f);
  int64_t mismatches = 0;
  for (int64_t outer : {1, 3}) {
    for (int64_t rows : {1, 2, 7, 50}) {
      for (int64_t inner : {2, 5, 15, 16, 17, 31, 33, 47, 63, 64, 65, 100, 255, 256, 257, 300, 513}) {
        std::vector<float> x(static_cast<size_t>(outer * rows * inner));
        for (float& v : x) v = dist(rng);
        // A value whose sum in float would lose it: the double accumulation must keep it.
        x[0] = 1e8f;
        std::vector<float> out(static_cast<size_t>(outer * inner), -1.0f);
        bam::cpu::reduce<float>(bam::cpu::ReduceOp::sum, x.data(), out.data(), outer, rows, inner);
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t c = 0; c < inner; ++c) {
            double sum = 0.0;
            for (int64_t r = 0; r < rows; ++r) sum += x[static_cast<size_t>((o * rows + r) * inner + c)];
            if (out[static_cast<size_t>(o * inner + c)] != static_cast<float>(sum)) {
              if (mismatches == 0)
                MESSAGE("first mismatch: outer ", o, " rows ", rows, " inner ", inner, " column ", c);
              ++mismatches;
            }
          }
        }
      }
    }
  }
  CHECK(mismatches == 0);
}
