// CUDA twin of kernels/cpu/bam_cross_entropy.h: the BAM cross-entropy, one thread block per row
// of the similarities, giving the row's loss and its gradient in one pass. f32 and f64;
// asynchronous on `stream`.
#pragma once

#include "engine/dtype.h"
#include "kernels/cpu/bam_cross_entropy.h"

namespace bam::cuda_kernels {

// s: [V*B, C]; p: [G*B, C]; row_loss: [V*B]; d_s: [V*B, C] or null. All contiguous, in dtype.
void bam_cross_entropy(DType dtype, const void* s, const void* p, void* row_loss, void* d_s,
                       const cpu::BamCrossEntropyShape& shape, void* stream);

}  // namespace bam::cuda_kernels
