// CUDA twin of kernels/cpu/sinkhorn.h: Sinkhorn balancing of the BAM target as scaling vectors,
// a handful of small kernels per call (no host round trip). f32 and f64; asynchronous on `stream`.
#pragma once

#include <cstddef>

#include "engine/dtype.h"
#include "kernels/cpu/sinkhorn.h"

namespace bam::cuda_kernels {

// Device scratch sinkhorn_balance needs (K, the row maxima, the scalings and column partial sums).
size_t sinkhorn_scratch_bytes(DType dtype, const cpu::SinkhornShape& shape);
// s: [rows, columns]; out: [out_rows, columns]; scratch: sinkhorn_scratch_bytes, 256-byte aligned.
void sinkhorn_balance(DType dtype, const void* s, void* out, void* scratch, const cpu::SinkhornShape& shape,
                      void* stream);

}  // namespace bam::cuda_kernels
