// Copy, dtype conversion and fill kernels for CPU memory, over strided layouts.
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cpu {

// dst[i] = convert(src[i]) for every index i of `shape`, each side with its own element strides
// (a source stride of 0 broadcasts). Any dtype pair; floats to integers truncate toward zero,
// anything to bool is (value != 0).
void copy_strided(const void* src, DType src_dtype, const int64_t* src_strides, void* dst,
                  DType dst_dtype, const int64_t* dst_strides, const int64_t* shape, int ndim);

// Contiguous dtype conversion of n elements.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);

// Sets n contiguous elements to value (converted to dtype).
void fill(void* dst, DType dtype, int64_t n, double value);

// Reads element i of a contiguous buffer as double (printing, item()).
double read_as_double(const void* data, DType dtype, int64_t i);

}  // namespace bam::cpu
