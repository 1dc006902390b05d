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

namespace attention_detail {

// The f32 path with AVX-512 (attention_avx512.cpp), one (batch, head) pair a call, entered after
// cpu_has_avx512(): q, k, v are the head's N x D blocks, rows ld_qkv apart (in the packed qkv row);
// out and d_out rows are ld_out apart; p is the head's N x N softmax, dq/dk/dv are written
// (overwritten) like q/k/v. `scratch` holds avx512_scratch_floats(N, D) floats.
int64_t avx512_scratch_floats(int64_t N, int64_t D);
void forward_head_avx512(const float* q, const float* k, const float* v, int64_t ld_qkv, float* out, int64_t ld_out,
                         float* p, int64_t N, int64_t D, float scale, float* scratch);
void backward_head_avx512(const float* q, const float* k, const float* v, int64_t ld_qkv, const float* p,
                          const float* d_out, int64_t ld_out, float* dq, float* dk, float* dv, int64_t N, int64_t D,
                          float scale, float* scratch);

}  // namespace attention_detail

}  // namespace bam::cpu
