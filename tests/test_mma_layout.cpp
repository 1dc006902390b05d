// The mma.sync.m16n8k16 fragment plumbing of the tensor-core attention (kernels/cuda/mma_layout.h),
// on the CPU: the coordinate functions against the PTX ISA's table (written here in the ISA's own
// element-index form), and the loaders and the accumulator-to-operand repacking through an
// emulated warp that multiplies the way the instruction is specified to. What a GPU alone can
// check (that the hardware follows the table) is the GPU suite's job.
#include <cstdint>
#include <random>
#include <vector>

#include "engine/dtype.h"
#include "kernels/cuda/mma_layout.h"
#include "tests/doctest_text.h"

namespace bam::test {
namespace {

using cuda_kernels::MmaLane;
using cuda_kernels::mma_lane;

struct RowCol {
  int row, col;
};
// The ISA's table: element i of a lane's fragment (register i / 2, low half when i is even).
RowCol isa_a(int lane, int i) {  // i = 0..7
  const int g = lane >> 2, t = lane % 4;
  return {(i < 2 || (i >= 4 && i < 6)) ? g : g + 8, t * 2 + (i & 1) + (i >= 4 ? 8 : 0)};
}
RowCol isa_b(int lane, int i) {  // i = 0..3
  const int g = lane >> 2, t = lane % 4;
  return {t * 2 + (i & 1) + (i >= 2 ? 8 : 0), g};
}
RowCol isa_c(int lane, int i) {  // i = 0..3
  const int g = lane >> 2, t = lane % 4;
  return {i < 2 ? g : g + 8, t * 2 + (i & 1)};
}

// A tile of bf16 bit patterns with row stride ld, read the way the device tile is.
struct HostTile {
  std::vector<uint16_t> bits;
  int ld;
  uint32_t pair_in_row(int row, int col) const {
    return uint32_t(bits[size_t(row * ld + col)]) | (uint32_t(bits[size_t(row * ld + col + 1)]) << 16);
  }
  uint32_t pair_in_column(int row, int col) const {
    return uint32_t(bits[size_t(row * ld + col)]) | (uint32_t(bits[size_t((row + 1) * ld + col)]) << 16);
  }
  float at(int row, int col) const { return bf16_bits_to_float(bits[size_t(row * ld + col)]); }
};

// Small integers: exact in bf16, and their products and sums exact in f32.
HostTile random_tile(int rows, int cols, int ld, std::mt19937& rng) {
  std::uniform_int_distribution<int> value(-4, 4);
  HostTile t{std::vector<uint16_t>(size_t(rows * ld), 0), ld};
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t.bits[size_t(r * ld + c)] = float_to_bf16_bits(float(value(rng)));
  return t;
}

float half_of(uint32_t reg, int half) { return bf16_bits_to_float(uint16_t(half ? reg >> 16 : reg & 0xffffu)); }

// One warp's registers for one instruction: A, B and the C/D accumulators of all 32 lanes.
struct Warp {
  uint32_t a[32][4];
  uint32_t b[32][2];
};

// D = A B + C as mma.sync.m16n8k16 is specified: the operands gathered from the lanes by the ISA's
// table, multiplied, and the result scattered back the same way.
void emulate_mma(const Warp& w, float (&c)[32][4]) {
  float A[16][16], B[16][8], D[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      RowCol e = isa_a(lane, i);
      A[e.row][e.col] = half_of(w.a[lane][i / 2], i % 2);
    }
    for (int i = 0; i < 4; ++i) {
      RowCol e = isa_b(lane, i);
      B[e.row][e.col] = half_of(w.b[lane][i / 2], i % 2);
    }
    for (int i = 0; i < 4; ++i) {
      RowCol e = isa_c(lane, i);
      D[e.row][e.col] = c[lane][i];
    }
  }
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n)
      for (int k = 0; k < 16; ++k) D[r][n] += A[r][k] * B[k][n];
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      RowCol e = isa_c(lane, i);
      c[lane][i] = D[e.row][e.col];
    }
}

}  // namespace

TEST_CASE("mma fragment coordinates follow the PTX ISA table and cover every element once") {
  int a_seen[16][16] = {}, b_seen[16][8] = {}, c_seen[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const MmaLane l = mma_lane(lane);
    CAPTURE(lane);
    for (int i = 0; i < 8; ++i) {
      const RowCol e = isa_a(lane, i);
      CHECK(cuda_kernels::a_row(l, i / 2) == e.row);
      CHECK(cuda_kernels::a_col(l, i / 2) + i % 2 == e.col);
      ++a_seen[e.row][e.col];
    }
    for (int i = 0; i < 4; ++i) {
      const RowCol e = isa_b(lane, i);
      CHECK(cuda_kernels::b_row(l, i / 2) + i % 2 == e.row);
      CHECK(cuda_kernels::b_col(l) == e.col);
      ++b_seen[e.row][e.col];
      const RowCol c = isa_c(lane, i);
      CHECK(cuda_kernels::c_row(l, i) == c.row);
      CHECK(cuda_kernels::c_col(l, i) == c.col);
      ++c_seen[c.row][c.col];
    }
  }
  int wrong = 0;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) wrong += a_seen[r][c] != 1 || (c < 8 && (b_seen[r][c] != 1 || c_seen[r][c] != 1));
  CHECK(wrong == 0);
}

// The attention kernels' two products through an emulated warp: scores S = Q K^T (A from a
// row-major tile at a row offset, B from a tile whose rows are B's columns), then O = P V with P
// repacked from S's accumulators (B from a tile whose rows are B's rows), each against plain loops.
TEST_CASE("mma loaders and accumulator repacking multiply correctly in an emulated warp") {
  std::mt19937 rng(20261128);
  const int D = 32, N = 32, ld = D + 8, r0 = 16;  // the warp's 16 rows start at row 16 of Q's tile
  HostTile q = random_tile(32, D, ld, rng), k = random_tile(N, D, ld, rng), v = random_tile(N, D, ld, rng);

  // S[16][N] = Q[r0.., :] K^T, as slices s[nt][lane][e].
  float s[N / 8][32][4] = {};
  for (int kk = 0; kk < D / 16; ++kk)
    for (int nt = 0; nt < N / 8; ++nt) {
      Warp w;
      for (int lane = 0; lane < 32; ++lane) {
        cuda_kernels::load_a(w.a[lane], q, r0, kk * 16, mma_lane(lane));
        cuda_kernels::load_b_rows_are_n(w.b[lane], k, nt * 8, kk * 16, mma_lane(lane));
      }
      emulate_mma(w, s[nt]);
    }
  int wrong = 0;
  for (int lane = 0; lane < 32; ++lane)
    for (int nt = 0; nt < N / 8; ++nt)
      for (int e = 0; e < 4; ++e) {
        const MmaLane l = mma_lane(lane);
        const int row = cuda_kernels::c_row(l, e), col = nt * 8 + cuda_kernels::c_col(l, e);
        float expected = 0;
        for (int d = 0; d < D; ++d) expected += q.at(r0 + row, d) * k.at(col, d);
        wrong += s[nt][lane][e] != expected;
      }
  CHECK_MESSAGE(wrong == 0, wrong << " of " << 32 * N / 2 << " score elements wrong");

  // O[16][D] = P V with P = S / 64 rounded to bf16 by the repacking from the accumulators.
  float o[D / 8][32][4] = {};
  for (int kk = 0; kk < N / 16; ++kk)
    for (int dt = 0; dt < D / 8; ++dt) {
      Warp w;
      for (int lane = 0; lane < 32; ++lane) {
        float acc[N / 8][4];
        for (int nt = 0; nt < N / 8; ++nt)
          for (int e = 0; e < 4; ++e) acc[nt][e] = s[nt][lane][e] / 64.0f;
        cuda_kernels::a_from_accumulators(w.a[lane], acc, kk, [](float lo, float hi) {
          return uint32_t(float_to_bf16_bits(lo)) | (uint32_t(float_to_bf16_bits(hi)) << 16);
        });
        cuda_kernels::load_b_rows_are_k(w.b[lane], v, kk * 16, dt * 8, mma_lane(lane));
      }
      emulate_mma(w, o[dt]);
    }
  wrong = 0;
  for (int lane = 0; lane < 32; ++lane)
    for (int dt = 0; dt < D / 8; ++dt)
      for (int e = 0; e < 4; ++e) {
        const MmaLane l = mma_lane(lane);
        const int row = cuda_kernels::c_row(l, e), col = dt * 8 + cuda_kernels::c_col(l, e);
        float expected = 0;
        for (int j = 0; j < N; ++j) {
          float p = 0;
          for (int d = 0; d < D; ++d) p += q.at(r0 + row, d) * k.at(j, d);
          // P as the repacking rounds it: a multiple of 2^-6 below 8, so every sum stays exact.
          expected += bf16_bits_to_float(float_to_bf16_bits(p / 64.0f)) * v.at(j, col);
        }
        wrong += o[dt][lane][e] != expected;
      }
  CHECK_MESSAGE(wrong == 0, wrong << " of " << 32 * D / 2 << " output elements wrong");
}

}  // namespace bam::test
