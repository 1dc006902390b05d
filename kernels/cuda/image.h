// CUDA twins of kernels/cpu/image.h: patchify (the patch-embedding im2col) and its adjoint, and
// bicubic resizing (PyTorch's bicubic, a = -0.75, align_corners=False) with its adjoint.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

void patchify_forward(DType dtype, const void* images, void* patches, int64_t B, int64_t C, int64_t H, int64_t W,
                      int64_t P, void* stream);
// d_images is fully overwritten (pixels no patch covers get 0).
void patchify_backward(DType dtype, const void* d_patches, void* d_images, int64_t B, int64_t C, int64_t H, int64_t W,
                       int64_t P, void* stream);

void bicubic_forward(DType dtype, const void* x, void* y, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h,
                     int64_t out_w, void* stream);
// scratch: N * in_h * in_w doubles (one accumulation plane per thread; no atomics, deterministic).
void bicubic_backward(DType dtype, const void* dy, void* dx, void* scratch, int64_t N, int64_t in_h, int64_t in_w,
                      int64_t out_h, int64_t out_w, void* stream);

}  // namespace bam::cuda_kernels
