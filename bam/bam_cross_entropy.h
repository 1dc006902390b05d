// The cross-entropy half of the BAM loss as one autograd op over the fused row kernels
// (kernels/cpu/bam_cross_entropy.h and its CUDA twin): forward and gradient in one pass, the
// gradient kept for backward. bam_loss uses it; the op-by-op form it replaces stays in the tests
// as the reference it is checked against.
#pragma once

#include "engine/tensor.h"

namespace bam {

// similarities S [V*B, T*B] (f32 or f64, the gradient flows into it), target P [G*B, T*B] (held
// constant). Returns the scalar loss
//   -1/(G (V-1) B) sum_{t<G} sum_{s != t} sum_b sum_j P_t[b, j] log softmax_j(S_s[b] / temperature)
// with the positive columns (j mod B == b) left out of the softmax when positive_masking, and
// (V-1) read as 1, every s counted, when V == 1.
// ranks: data parallelism's column layout (kernels/cpu/bam_cross_entropy.h), for one rank's rows
// against every rank's target columns.
struct RankColumns {
  int64_t column_batch = 0, first_image = 0;
};
Tensor bam_cross_entropy(const Tensor& similarities, const Tensor& target, int64_t views, int64_t globals,
                         int64_t batch, double temperature, bool positive_masking, const RankColumns& ranks = {});

}  // namespace bam
