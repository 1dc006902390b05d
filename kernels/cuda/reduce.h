// CUDA twins of kernels/cpu/reduce.h: sum/max/min and argmax/argmin over the middle axis of a
// contiguous [outer, reduce, inner] layout. Sums accumulate in double like the CPU twin; max/min
// propagate NaN; arg reductions return the first extreme index. Asynchronous on `stream`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"
#include "kernels/cpu/reduce.h"

namespace bam::cuda_kernels {

// Device scratch that reduce() needs for these sizes: 0 for row reductions, and for column
// reductions the GPU fills in one pass of row chunks (many columns, or few rows).
size_t reduce_scratch_bytes(int64_t outer, int64_t reduce_size, int64_t inner);
void reduce(cpu::ReduceOp op, DType dtype, const void* x, void* out, int64_t outer, int64_t reduce_size, int64_t inner,
            void* scratch, void* stream);
// out[c] = the sum over r of x[r, c] for a row-major [rows, cols] matrix, in double, in one launch
// without scratch (each block walks every row of its 32 columns): for matrices of partial sums a
// few thousand rows deep, such as LayerNorm backward's. `dtype` and out_dtype are equal, or f32 in
// and bf16/f16 out.
void column_sums(DType dtype, DType out_dtype, const void* x, void* out, int64_t rows, int64_t cols, void* stream);
void arg_reduce(bool is_max, DType dtype, const void* x, int64_t* out, int64_t outer, int64_t reduce_size,
                int64_t inner, void* stream);

}  // namespace bam::cuda_kernels
