// The CUDA emulator's nvcuda::wmma (16 x 16 x 16 tiles only, what attention_tc.cu uses). Every
// lane holds the whole tile (the hardware spreads it over the warp in an unspecified layout, which
// code that only loads, multiplies and stores cannot observe); mma_sync is a warp-wide operation
// that computes the product once, in f32, and gives it to every lane. store_matrix_sync writes
// only the calling lane's eighth of the tile, so that code which reads the tile back before the
// whole warp has stored it (a missing __syncwarp) reads stale values, as it may on a GPU. Loads
// and stores check the pointer and stride alignment the hardware requires.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace nvcuda::wmma {

// mptr 256-bit aligned, ldm a multiple of 16 bytes (the CUDA programming guide's rule).
template <typename T>
void check_wmma_access(const T* p, unsigned ld, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ld * sizeof(T)) % 16 != 0)
    throw std::runtime_error(std::string("CUDA emulator: wmma::") + what + " with a pointer not 32-byte aligned or " +
                             "a stride of " + std::to_string(ld) + " elements, not a multiple of 16 bytes");
}

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator's wmma has 16 x 16 x 16 tiles only");
  static constexpr int num_elements = 256;
  T x[256];  // the logical tile, row-major
};

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
  constexpr bool column_major = std::is_same_v<Layout, col_major>;
  check_wmma_access(p, ld, "load_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = column_major ? p[c * ld + r] : p[r * ld + c];
}
template <typename T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ld, layout_t layout) {
  check_wmma_access(p, ld, "load_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = layout == mem_col_major ? p[c * ld + r] : p[r * ld + c];
}
template <typename T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ld, layout_t layout) {
  check_wmma_access(p, ld, "store_matrix_sync");
  const int first = static_cast<int>(::bam::emu::lane_in_warp()) * 8;  // this lane's 8 elements
  for (int e = first; e < first + 8; ++e) {
    const int r = e / 16, c = e % 16;
    (layout == mem_col_major ? p[c * ld + r] : p[r * ld + c]) = f.x[e];
  }
}
template <typename Use, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, V v) {
  for (T& e : f.x) e = T(v);
}

template <typename S, typename LA, typename LB>
struct MmaOperands {
  fragment<accumulator, 16, 16, 16, float>* d;
  const fragment<matrix_a, 16, 16, 16, S, LA>* a;
  const fragment<matrix_b, 16, 16, 16, S, LB>* b;
  const fragment<accumulator, 16, 16, 16, float>* c;
};

template <typename S, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, S, LA>& a,
              const fragment<matrix_b, 16, 16, 16, S, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  MmaOperands<S, LA, LB> mine{&d, &a, &b, &c};
  ::bam::emu::warp_collective(
      0xffffffffu, "wmma::mma_sync", &mine,
      [](void* const* lanes, unsigned) {
        const auto& first = *static_cast<const MmaOperands<S, LA, LB>*>(lanes[0]);
        float product[256];
        for (int r = 0; r < 16; ++r)
          for (int col = 0; col < 16; ++col) {
            float sum = first.c->x[r * 16 + col];
            for (int k = 0; k < 16; ++k) sum += float(first.a->x[r * 16 + k]) * float(first.b->x[k * 16 + col]);
            product[r * 16 + col] = sum;
          }
        for (int lane = 0; lane < 32; ++lane)
          std::memcpy(static_cast<const MmaOperands<S, LA, LB>*>(lanes[lane])->d->x, product, sizeof(product));
      });
}

}  // namespace nvcuda::wmma
