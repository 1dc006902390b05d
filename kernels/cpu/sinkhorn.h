// Sinkhorn balancing of the BAM target (DESIGN.md section 4) as scaling vectors: the plan is
// K[i, j] x[j] y[i] with K = exp(S/eps - max) (0 where masked), and each half-iteration rescales
// one vector so that the plan's columns (then rows) have their marginal mass. This equals the
// op-by-op form, which rescales the whole matrix each time, in exact arithmetic, and reads K twice
// per iteration instead of writing it twice. This is the specification of the CUDA kernels.
//
//   m    = max over unmasked (i, j) of S[i, j] / eps;  K[i, j] = exp(S[i, j] / eps - m), 0 if masked
//   x = 1, y = 1; repeat `iterations` times:
//     x[j] = column_mass / sum_i K[i, j] y[i]      (every target column gets the same mass)
//     y[i] = row_mass / sum_j K[i, j] x[j]         (every view row gets the same mass)
//   out[i, j] = K[i, j] x[j] / sum_j K[i, j] x[j]   for the first out_rows rows (rows sum to 1)
//
// Column j of row i is masked when positive_masking and j mod B == i mod B (the same image).
// Sums and scalings are in double; K and the output in the input's precision.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bam::cpu {

struct SinkhornShape {
  int64_t rows;      // V*B similarity rows (every view)
  int64_t columns;   // T*B target columns
  int64_t batch;     // B
  int64_t out_rows;  // the balanced rows written: n_global*B
  double eps;
  int64_t iterations;
  double column_mass, row_mass;
  bool positive_masking;
};

// s: [rows, columns]; out: [out_rows, columns].
template <typename T>
void sinkhorn_balance(const T* s, T* out, const SinkhornShape& shape);

}  // namespace bam::cpu
