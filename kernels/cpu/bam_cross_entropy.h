// The BAM cross-entropy (DESIGN.md section 4) as one pass per row that gives the row's loss and
// its gradient together: the masked temperature log-softmax, the sum over the other views'
// targets, the product and the softmax backward, which the op-by-op form spreads over some twenty
// kernels and their saved intermediates. This is the specification of the CUDA kernel.
//
// Row i = (view s, image b) of the similarities S [V*B, C] (C = T*B target columns):
//   L_j    = S[i, j] / tau, with column j masked out when positive_masking and j mod B == b;
//   logQ_j = L_j - logsumexp over the unmasked columns;
//   W_j    = sum over target views t < G, t != s (every t when V == 1) of P[t*B + b, j];
//   loss_i = -scale * sum over unmasked j of W_j logQ_j;
//   dS[i, j] = -scale * (W_j - softmax_j * sum_k W_k) / tau on unmasked columns, 0 on masked ones,
// with scale = 1 / (G * max(V - 1, 1) * B), so that the loss is the sum of loss_i over the rows.
//
// Data parallelism (bam_loss_across_ranks): the rows are one rank's B images, the columns every
// rank's target views (C = T * column_batch, column_batch = W*B images each), and this rank's
// image b is image first_image + b among them: column j is masked when j mod column_batch ==
// first_image + b, and scale counts all column_batch = W*B images, so that the ranks' losses add
// up to the loss of the whole batch. (0 for both: the single-process layout.)
#pragma once

#include <cstdint>

namespace bam::cpu {

struct BamCrossEntropyShape {
  int64_t views;    // V
  int64_t globals;  // G: the first G views' target rows are P's
  int64_t batch;    // B
  int64_t columns;  // C = T * B
  double temperature;
  bool positive_masking;
  int64_t column_batch = 0;  // images per target view among the columns, and the loss averages over (0: batch)
  int64_t first_image = 0;   // the column image of row image 0
};

// s: [V*B, C]; p: [G*B, C]; row_loss: [V*B]; d_s: [V*B, C] or null (no gradient wanted).
template <typename T>
void bam_cross_entropy(const T* s, const T* p, T* row_loss, T* d_s, const BamCrossEntropyShape& shape);

}  // namespace bam::cpu
