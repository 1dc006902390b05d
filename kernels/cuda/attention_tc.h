// The tensor-core flash attention for 16-bit activations (attention_tc.cu), called by
// attention.cu's entry points for bf16 and f16; same packed layouts and saved statistics.
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

// lse: [B, H, N] f32.
void attention_forward_tc(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H,
                          int64_t D, double scale, void* stream);
// delta: [B, H, N] f32, dot(d_out, out) per row (computed by the caller). d_qkv is fully overwritten.
void attention_backward_tc(DType dtype, const void* qkv, const void* lse, const void* delta, const void* d_out,
                           void* d_qkv, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream);

}  // namespace bam::cuda_kernels
