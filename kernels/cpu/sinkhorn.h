// Sinkhorn balancing of the BAM target (DESIGN.md section 4) as scaling vectors: the plan is
// K[i, j] x[j] y[i] with K = exp(S/eps - m[j]) (0 where masked), and each half-iteration rescales
// one vector so that the plan's columns (then rows) have their marginal mass. This equals the
// op-by-op form, which rescales the whole matrix each time, in exact arithmetic, and reads K twice
// per iteration instead of writing it twice. This is the specification of the CUDA kernels.
//
//   m[j] = max over unmasked rows i of S[i, j] / eps;  K[i, j] = exp(S[i, j] / eps - m[j]), 0 if masked
//
// Each column's own maximum, not the matrix's: the first column scaling absorbs it (the plan is
// the same in exact arithmetic), and no column of K underflows to all zeros, which with one
// maximum happened at small eps (at eps 0.002, cosines 0.18 below the best one are exp(-90)) and
// made the target NaN. x starts as the shifts' difference, in double, so that K x is exp(S/eps -
// max) and no iterations leave each row's softmax, as before.
//   x[j] = exp(m[j] - max_j m[j]), y = 1; repeat `iterations` times:
//     x[j] = column_mass / sum_i K[i, j] y[i]      (every target column gets the same mass)
//     y[i] = row_mass / sum_j K[i, j] x[j]         (every view row gets the same mass)
//   out[i, j] = K[i, j] x[j] / sum_j K[i, j] x[j]   for the first out_rows rows (rows sum to 1)
//
// Column j of row i is masked when positive_masking and j mod B == i mod B (the same image).
// S/eps - m[j] is formed in the input's precision; K, the sums and the scalings are double (f32's
// exp underflows at -104: at eps 0.002 a row 0.21 below every column's best cosine was all
// zeros, and NaN); the output is in the input's precision.
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
