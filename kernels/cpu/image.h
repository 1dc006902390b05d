// Image-shaped kernels for the ViT: patchify (im2col of a stride-P PxP convolution) and its
// inverse, and bicubic resizing with its backward (for position-embedding interpolation).
// Shape letters: B batch, C channels, H x W image, P patch size, Hp x Wp = (H/P) x (W/P) patches.
#pragma once

#include <cstdint>

namespace bam::cpu {

// images [B, C, H, W] -> patches [B, Hp*Wp, C*P*P], last dim ordered (c, ky, kx). Pixels beyond
// Hp*P or Wp*P are not used (as a stride-P convolution without padding).
template <typename T>
void patchify_forward(const T* images, T* patches, int64_t B, int64_t C, int64_t H, int64_t W, int64_t P);
// The adjoint: d_images (fully overwritten; unused pixels get 0) from d_patches.
template <typename T>
void patchify_backward(const T* d_patches, T* d_images, int64_t B, int64_t C, int64_t H, int64_t W, int64_t P);

// x [N, in_h, in_w] -> y [N, out_h, out_w] (N = B*C planes). Cubic convolution with a = -0.75,
// source coordinate (dst + 0.5) * in/out - 0.5, taps clamped at the border: as PyTorch's
// interpolate(mode="bicubic", align_corners=False).
template <typename T>
void bicubic_forward(const T* x, T* y, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w);
// dx (overwritten) = adjoint applied to dy.
template <typename T>
void bicubic_backward(const T* dy, T* dx, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w);

}  // namespace bam::cpu
