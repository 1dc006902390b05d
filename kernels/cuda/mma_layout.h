// Where the elements of an mma.sync.m16n8k16 operand live in a warp (PTX ISA, "Matrix Fragments
// for mma.m16n8k16", 16-bit A/B and f32 C), and the fragment loaders built on it. The arithmetic
// is host and device code: the attention kernels (attention_mma.cu) load their operands through
// it, and tests/test_mma_layout.cpp checks it on the CPU against the PTX table and through an
// emulated warp.
//
// A lane is (g, t) = (lane / 4, lane % 4). Each 32-bit register holds two 16-bit elements, the
// lower-index one in the low half:
//   A (16 x 16): register r holds row a_row, columns a_col and a_col + 1;
//   B (16 x 8):  register r holds column b_col, rows b_row and b_row + 1;
//   C (16 x 8):  element e (a float) is at (c_row, c_col).
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace bam::cuda_kernels {

struct MmaLane {
  int g, t;  // groupID (a row within 8) and thread in group (a column pair)
};
BAM_HD MmaLane mma_lane(int lane) { return {lane >> 2, lane & 3}; }

BAM_HD int a_row(MmaLane l, int r) { return l.g + 8 * (r & 1); }  // r = 0..3
BAM_HD int a_col(MmaLane l, int r) { return 2 * l.t + 8 * (r >> 1); }
BAM_HD int b_row(MmaLane l, int r) { return 2 * l.t + 8 * r; }  // r = 0..1
BAM_HD int b_col(MmaLane l) { return l.g; }
BAM_HD int c_row(MmaLane l, int e) { return l.g + 8 * (e >> 1); }  // e = 0..3
BAM_HD int c_col(MmaLane l, int e) { return 2 * l.t + (e & 1); }

// The loaders read a tile through `Tile`, which provides
//   uint32_t pair_in_row(row, col):    elements (row, col) and (row, col + 1), packed;
//   uint32_t pair_in_column(row, col): elements (row, col) and (row + 1, col), packed.
// The device's tile is shared memory; the tests' is a host array.

// A operand: rows r0.., columns k0.. of a row-major tile.
template <typename Tile>
BAM_HD void load_a(uint32_t (&a)[4], const Tile& tile, int r0, int k0, MmaLane l) {
  BAM_UNROLL for (int r = 0; r < 4; ++r) a[r] = tile.pair_in_row(r0 + a_row(l, r), k0 + a_col(l, r));
}

// B operand B[k][n] = tile[n0 + n][k0 + k]: the tile's rows are B's columns (K in Q K^T).
template <typename Tile>
BAM_HD void load_b_rows_are_n(uint32_t (&b)[2], const Tile& tile, int n0, int k0, MmaLane l) {
  BAM_UNROLL for (int r = 0; r < 2; ++r) b[r] = tile.pair_in_row(n0 + b_col(l), k0 + b_row(l, r));
}

// B operand B[k][n] = tile[k0 + k][n0 + n]: the tile's rows are B's rows (V in P V).
template <typename Tile>
BAM_HD void load_b_rows_are_k(uint32_t (&b)[2], const Tile& tile, int k0, int n0, MmaLane l) {
  BAM_UNROLL for (int r = 0; r < 2; ++r) b[r] = tile.pair_in_column(k0 + b_row(l, r), n0 + b_col(l));
}

// The A operand for columns 16 kk.. of a 16 x N product held as C slices acc[N / 8][4] (one
// product's result as the next one's operand, FlashAttention-2's P V): register r holds slice
// 2 kk + r / 2, elements 2 (r % 2) and 2 (r % 2) + 1, which sit exactly where A register r's
// elements belong. `pack(lo, hi)` rounds two floats to the 16-bit type and packs them.
template <int SLICES, typename Pack>
BAM_HD void a_from_accumulators(uint32_t (&a)[4], const float (&acc)[SLICES][4], int kk, Pack pack) {
  BAM_UNROLL for (int r = 0; r < 4; ++r) {
    const float(&slice)[4] = acc[2 * kk + (r >> 1)];
    a[r] = pack(slice[2 * (r & 1)], slice[2 * (r & 1) + 1]);
  }
}

}  // namespace bam::cuda_kernels
