// CUDA twins of kernels/cpu/copy.h: strided/broadcasting/converting copy and fill on the device,
// launched asynchronously on the given stream (a cudaStream_t; null is the default stream).
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

void copy_strided(const void* src, DType src_dtype, const int64_t* src_strides, void* dst, DType dst_dtype,
                  const int64_t* dst_strides, const int64_t* shape, int ndim, void* stream);
void fill(void* dst, DType dtype, int64_t n, double value, void* stream);

}  // namespace bam::cuda_kernels
