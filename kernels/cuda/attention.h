// Fused multi-head self-attention on the GPU, flash-attention style: no N x N matrix is stored.
// Same packed layout as kernels/cpu/attention.h: qkv [B, N, 3, H, D], out [B, N, H*D].
// Forward keeps the per-row log-sum-exp (lse, [B, H, N], compute type); backward recomputes the
// probabilities from it. One thread owns one query row (forward, dQ) or one key row (dK, dV) and
// streams the other side through shared memory in tiles. Head dims 16, 32, 64 and 128 (and any D
// up to 128, padded inside the kernel). f32, f64, bf16, f16 (16-bit types compute in f32).
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

// lse: [B, H, N] in the compute type (f64 for f64, else f32).
void attention_forward(DType dtype, const void* qkv, void* out, void* lse, int64_t B, int64_t N, int64_t H, int64_t D,
                       double scale, void* stream);
// probs [B, H, N, N] = softmax rows rebuilt from lse (for attention maps; not needed by backward).
void attention_probs(DType dtype, const void* qkv, const void* lse, void* probs, int64_t B, int64_t N, int64_t H,
                     int64_t D, double scale, void* stream);
// d_qkv (fully overwritten) from d_out; `out` and `lse` are the forward's. scratch: B*H*N values
// of the compute type (the per-row dot(d_out, out)).
void attention_backward(DType dtype, const void* qkv, const void* out, const void* lse, const void* d_out, void* d_qkv,
                        void* scratch, int64_t B, int64_t N, int64_t H, int64_t D, double scale, void* stream);

}  // namespace bam::cuda_kernels
