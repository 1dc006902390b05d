// Iteration over strided N-d layouts: coalesces dimensions, then walks "rows" (all dims but the
// last) so kernels run a tight inner loop with fixed strides. Header-only; shared by the
// strided kernels (copy, broadcasting binary ops, comparisons, where).
#pragma once

#include <array>
#include <cstdint>

namespace bam::cpu {

inline constexpr int kMaxDims = 16;

// N operands sharing one iteration shape, each with its own element strides (0 = broadcast).
template <int N>
struct StridedLoop {
  int ndim = 1;
  std::array<int64_t, kMaxDims> shape{};
  std::array<std::array<int64_t, kMaxDims>, N> strides{};

  int64_t inner() const { return shape[ndim - 1]; }
  int64_t inner_stride(int k) const { return strides[k][ndim - 1]; }
  int64_t rows() const {
    int64_t r = 1;
    for (int d = 0; d + 1 < ndim; ++d) r *= shape[d];
    return r;
  }
  // Element offset of the first element of row `row` for every operand.
  void row_offsets(int64_t row, int64_t* offsets) const {
    for (int k = 0; k < N; ++k) offsets[k] = 0;
    for (int d = ndim - 2; d >= 0; --d) {
      int64_t i = row % shape[d];
      row /= shape[d];
      for (int k = 0; k < N; ++k) offsets[k] += i * strides[k][d];
    }
  }
};

// Builds the loop: drops size-1 dims and merges neighbours that are contiguous for all operands.
template <int N>
StridedLoop<N> make_strided_loop(const int64_t* shape, int ndim, const std::array<const int64_t*, N>& strides) {
  StridedLoop<N> loop;
  int out = 0;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    if (out > 0) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k)
        if (loop.strides[k][out - 1] != strides[k][d] * shape[d]) mergeable = false;
      if (mergeable) {
        loop.shape[out - 1] *= shape[d];
        for (int k = 0; k < N; ++k) loop.strides[k][out - 1] = strides[k][d];
        continue;
      }
    }
    loop.shape[out] = shape[d];
    for (int k = 0; k < N; ++k) loop.strides[k][out] = strides[k][d];
    ++out;
  }
  if (out == 0) {  // a single element
    loop.shape[0] = 1;
    for (int k = 0; k < N; ++k) loop.strides[k][0] = 0;
    out = 1;
  }
  loop.ndim = out;
  return loop;
}

}  // namespace bam::cpu
