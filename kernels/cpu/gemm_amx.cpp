// The f32 GEMM with bf16 operands on Intel AMX (gemm_f32_bf16 in gemm.h, when the CPU has
// AMX-BF16): the tiles multiply the packed bf16 operands (gemm_bf16_pack_avx512bf16.cpp) and
// accumulate their products in f32. Compiled with -mamx-tile -mamx-bf16 -mavx512bf16 -mavx512bw;
// gemm_bf16.cpp only calls in here after cpu_has_amx_bf16() said yes.
//
// AMX in three sentences. A core has eight tile registers of up to 16 rows x 64 bytes and one
// tile unit. TDPBF16PS takes a 16 x 32 bf16 tile of A, a 32 x 16 bf16 tile of B (stored as 16 rows
// of 16 bf16 *pairs*: row p holds B[2p][n] and B[2p+1][n] side by side, the "VNNI" layout) and
// adds their product into a 16 x 16 f32 tile: 16,384 multiply-adds in one instruction. So the
// work around it is mostly packing: op(A) into row tiles, op(B) into pair tiles, both rounded to bf16.
//
// Blocking. Four C tiles make a 32 x 32 block of C; per step of 32 along K, two A tiles and two
// B tiles are loaded and four products issued (all eight tile registers). The accumulators stay
// in the tiles for a whole K slice: a task packs 32 rows of op(A) for the slice, then sweeps its
// 32-column panels of the slice's packed op(B) (packed once per slice, by all threads).
// The driver (threads, buffers) is in gemm_bf16.cpp: this file holds only what needs the AMX
// instructions, and no inline or template code from elsewhere (tests/check_avx2_objects.sh).
#include <cstdint>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/x86_intrinsics.h"

namespace bam::cpu::gemm_detail {
namespace {

constexpr int kTileRows = 16;         // rows of every tile; also the columns of a C tile
constexpr int kChunk = 32;            // K per A tile (32 bf16 = 64 bytes a row)
constexpr int kTileElements = 512;    // bf16 in one A or B tile (16 x 32)
constexpr int kBlock = 32;            // C block: 2 x 2 tiles
constexpr int64_t kStrideBytes = 64;  // row stride of a packed tile

// std::min without the template: an instantiation here would be a weak symbol compiled for AMX
// and AVX-512 that the linker could pick for the whole program (tests/check_avx2_objects.sh).
inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// The tile configuration: palette 1, every tile 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

TileConfig make_config() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = kStrideBytes;
    config.rows[t] = kTileRows;
  }
  return config;
}

// How a C tile starts and ends. `direct`: a whole 16 x 16 tile with alpha 1 and beta 0 or 1 is
// loaded from (beta 1) and stored to C itself; any other goes through `scratch`, then
// c = alpha * product + beta * c on its rows x cols (c not read when beta == 0).
// `bias` (null for none; only with alpha 1 and beta 1) stands in for C's old rows: every row of
// the tile starts as the same 16 values. A direct tile loads that row 16 times (a tile load with
// stride 0); any other adds it at the end, as beta * c would have.
struct TileTarget {
  float* c;
  const float* bias;
  int rows;
  int cols;
  bool direct;
};

// GCC's tile intrinsics paste their tile number into the assembly text, so it must be a literal:
// these switch over the four C tiles.
inline void load_c_tile(int tile, const float* c, int64_t stride) {
  switch (tile) {
    case 0: _tile_loadd(0, c, stride); break;
    case 1: _tile_loadd(1, c, stride); break;
    case 2: _tile_loadd(2, c, stride); break;
    default: _tile_loadd(3, c, stride); break;
  }
}
inline void zero_c_tile(int tile) {
  switch (tile) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
  }
}
inline void store_c_tile(int tile, float* c, int64_t stride) {
  switch (tile) {
    case 0: _tile_stored(0, c, stride); break;
    case 1: _tile_stored(1, c, stride); break;
    case 2: _tile_stored(2, c, stride); break;
    default: _tile_stored(3, c, stride); break;
  }
}

inline void start_tile(int tile, const TileTarget& t, int64_t ldc, float beta) {
  if (t.direct && t.bias) {
    load_c_tile(tile, t.bias, 0);
  } else if (t.direct && beta == 1.0f) {
    load_c_tile(tile, t.c, ldc * int64_t{sizeof(float)});
  } else {
    zero_c_tile(tile);
  }
}

inline void finish_tile(int tile, const TileTarget& t, int64_t ldc, float alpha, float beta, float* scratch) {
  if (t.rows <= 0 || t.cols <= 0) return;
  if (t.direct) {
    store_c_tile(tile, t.c, ldc * int64_t{sizeof(float)});
    return;
  }
  store_c_tile(tile, scratch, 16 * int64_t{sizeof(float)});
  for (int r = 0; r < t.rows; ++r) {
    float* c_row = t.c + r * ldc;
    const float* s = scratch + r * 16;
    if (t.bias) {
      for (int j = 0; j < t.cols; ++j) c_row[j] = alpha * s[j] + t.bias[j];
    } else if (beta == 0.0f) {
      for (int j = 0; j < t.cols; ++j) c_row[j] = alpha * s[j];
    } else {
      for (int j = 0; j < t.cols; ++j) c_row[j] = alpha * s[j] + beta * c_row[j];
    }
  }
}

// One 32 x 32 block of C (its top-left rows x cols inside C) from `chunks` packed steps of A
// (a: chunk c's two tiles at a + 2c * 512, a + (2c + 1) * 512) and of B (likewise). TWO_ROWS /
// TWO_COLS: whether the second tile row / column holds any of C (edges skip the empty half).
template <bool TWO_ROWS, bool TWO_COLS>
void multiply_block(int64_t chunks, const uint16_t* a, const uint16_t* b, float* c, int64_t ldc, int rows, int cols,
                    float alpha, float beta, const float* bias) {
  alignas(64) float scratch[16 * 16];
  const bool plain = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
  TileTarget t[4];
  for (int q = 0; q < 4; ++q) {
    const int r0 = (q / 2) * 16, c0 = (q % 2) * 16;
    t[q].c = c + r0 * ldc + c0;
    t[q].bias = bias && c0 < cols ? bias + c0 : nullptr;
    t[q].rows = static_cast<int>(smaller(16, rows - r0));
    t[q].cols = static_cast<int>(smaller(16, cols - c0));
    t[q].direct = plain && t[q].rows == 16 && t[q].cols == 16;
  }
  start_tile(0, t[0], ldc, beta);
  if (TWO_COLS) start_tile(1, t[1], ldc, beta);
  if (TWO_ROWS) start_tile(2, t[2], ldc, beta);
  if (TWO_ROWS && TWO_COLS) start_tile(3, t[3], ldc, beta);
  for (int64_t step = 0; step < chunks; ++step) {
    const uint16_t* a_step = a + step * 2 * kTileElements;
    const uint16_t* b_step = b + step * 2 * kTileElements;
    _tile_loadd(4, a_step, kStrideBytes);
    _tile_loadd(6, b_step, kStrideBytes);
    if (TWO_ROWS) _tile_loadd(5, a_step + kTileElements, kStrideBytes);
    if (TWO_COLS) _tile_loadd(7, b_step + kTileElements, kStrideBytes);
    _tile_dpbf16ps(0, 4, 6);
    if (TWO_COLS) _tile_dpbf16ps(1, 4, 7);
    if (TWO_ROWS) _tile_dpbf16ps(2, 5, 6);
    if (TWO_ROWS && TWO_COLS) _tile_dpbf16ps(3, 5, 7);
  }
  finish_tile(0, t[0], ldc, alpha, beta, scratch);
  if (TWO_COLS) finish_tile(1, t[1], ldc, alpha, beta, scratch);
  if (TWO_ROWS) finish_tile(2, t[2], ldc, alpha, beta, scratch);
  if (TWO_ROWS && TWO_COLS) finish_tile(3, t[3], ldc, alpha, beta, scratch);
}

}  // namespace

void amx_multiply_panels(const uint16_t* packed_a, const uint16_t* packed_b, int64_t M, int64_t N, int64_t K,
                         int64_t i0, int64_t panel_begin, int64_t panel_end, float alpha, float beta, const float* bias,
                         float* C, int64_t ldc) {
  static const TileConfig config = make_config();
  const int64_t chunks = (K + kChunk - 1) / kChunk;
  const int rows = static_cast<int>(smaller(kBlock, M - i0));
  _tile_loadconfig(&config);
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    const int64_t j0 = panel * kBlock;
    const int cols = static_cast<int>(smaller(kBlock, N - j0));
    const uint16_t* b = packed_b + panel * chunks * 2 * kTileElements;
    float* c = C + i0 * ldc + j0;
    const float* panel_bias = bias ? bias + j0 : nullptr;
    if (rows > 16 && cols > 16) {
      multiply_block<true, true>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    } else if (rows > 16) {
      multiply_block<true, false>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    } else if (cols > 16) {
      multiply_block<false, true>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    } else {
      multiply_block<false, false>(chunks, packed_a, b, c, ldc, rows, cols, alpha, beta, panel_bias);
    }
  }
  // Hands the tile state back, so that the thread's context switches stop saving 8 KiB of it.
  _tile_release();
}

}  // namespace bam::cpu::gemm_detail
