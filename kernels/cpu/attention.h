// Multi-head self-attention on packed qkv, forward and backward, one (batch, head) pair per task.
// Shape letters: B batch, N tokens, H heads, D head dim, C = H * D.
// qkv is [B, N, 3, H, D] (timm's qkv linear output: q, k, v blocks of C along the last dim);
// out is [B, N, C] (heads concatenated, ready for the output projection).
#pragma once

#include <cstdint>

namespace bam::cpu {

// out = softmax(q k^T * scale) v per head; probs [B, H, N, N] receives the softmax (kept for backward).
template <typename T>
void attention_forward(const T* qkv, T* out, T* probs, int64_t B, int64_t N, int64_t H, int64_t D, double scale);

// d_qkv (fully overwritten) from d_out, using the saved probs.
template <typename T>
void attention_backward(const T* qkv, const T* probs, const T* d_out, T* d_qkv, int64_t B, int64_t N, int64_t H,
                        int64_t D, double scale);

}  // namespace bam::cpu
