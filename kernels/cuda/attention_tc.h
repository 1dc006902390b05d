// The tensor-core flash attention for 16-bit activations (bf16, f16), called by attention.cu's
// entry points; same packed layouts and saved statistics as the other kernels. Two
// implementations: mma.sync at the register level (attention_mma.cu, the default) and the earlier
// WMMA kernels (attention_tc.cu), kept, selectable with BAM_ATTENTION=wmma, until the first GPU
// run has measured the two side by side; then the slower one goes.
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

// True when BAM_ATTENTION=wmma asks for the WMMA kernels (read at every call, so tests and
// benchmarks can switch).
bool attention_prefers_wmma();

// lse: [B, H, N] f32.
void attention_forward_mma(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H,
                           int64_t D, double scale, void* stream);
void attention_forward_wmma(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H,
                            int64_t D, double scale, void* stream);
// delta: [B, H, N] f32, dot(d_out, out) per row (computed by the caller). d_qkv is fully overwritten.
void attention_backward_mma(DType dtype, const void* qkv, const void* lse, const void* delta, const void* d_out,
                            void* d_qkv, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream);
void attention_backward_wmma(DType dtype, const void* qkv, const void* lse, const void* delta, const void* d_out,
                             void* d_qkv, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream);

}  // namespace bam::cuda_kernels
