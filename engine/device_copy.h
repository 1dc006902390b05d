// copy_into: the one routine that moves elements between two tensors of the same device,
// broadcasting the source and converting dtypes (CPU kernel or CUDA kernel by device).
#pragma once

#include "engine/tensor.h"

namespace bam {

// dst[...] = src[...] with src broadcast to dst's shape; no autograd. Both on the same device.
void copy_into(const Tensor& dst, const Tensor& src);

// Strides of `t` seen with shape `target` (0 on broadcast dims); fails naming `op` if it can't.
Shape broadcast_strides(const Tensor& t, const Shape& target, const char* op);

}  // namespace bam
