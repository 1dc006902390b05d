// The BAM target: Sinkhorn balancing of the similarities (DESIGN.md section 4) over the scaling
// kernels (kernels/cpu/sinkhorn.h and its CUDA twin). No gradient: the target is a constant.
#pragma once

#include "engine/communicator.h"
#include "engine/tensor.h"

namespace bam {

// similarities S [V*B, T*B] (f32 or f64). Returns the first out_rows rows of the balanced plan,
// each summing to 1: entropic regularisation eps, num_iters iterations, the positive columns
// (j mod B == i mod B) masked when positive_masking. The marginals are the spec's: 1/(T*B - T)
// per target column with masking (1/(T*B) without), 1/(V*B) per row.
Tensor sinkhorn_target(const Tensor& similarities, double eps, int64_t num_iters, int64_t batch,
                       int64_t target_crops, bool positive_masking, int64_t out_rows);

// Data parallelism (DESIGN.md section 4 item 10): this rank's rows of the similarities, S
// [V*B, T*W*B] against every rank's target columns (crop-major, then rank), balanced as the whole
// batch's [V*W*B, T*W*B] would be: the maximum and each iteration's column sums are taken over all
// ranks (group), the row mass is 1/(V*W*B), the positive column of row image b is
// j mod W*B == rank*B + b. Returns this rank's first out_rows rows. Built from engine ops (the
// column sums in f64, as the fused kernel keeps them), with a few small collectives per iteration.
Tensor sinkhorn_target_across_ranks(const Tensor& similarities, double eps, int64_t num_iters, int64_t batch,
                                    int64_t target_crops, bool positive_masking, int64_t out_rows, Communicator& group);

}  // namespace bam
