// CUDA twins of kernels/cpu/index.h over contiguous [outer, dim, inner] layouts. Out-of-range
// indices are skipped and reported through `error` (int64[2] the device can write, zeroed by the
// caller: a slot of engine/cuda_error_slots.h): error[0] becomes 1 and error[1] holds one offending
// index value.
#pragma once

#include <cstdint>

#include "engine/dtype.h"

namespace bam::cuda_kernels {

// out[o, j, i] = x[o, index[o, j, i], i]   (any dtype: values are moved, not computed)
void gather(DType dtype, const void* x, const int64_t* index, void* out, int64_t outer, int64_t x_dim,
            int64_t index_dim, int64_t inner, int64_t* error, void* stream);
// out[o, index[o, j, i], i] += src[o, j, i]   (floating dtypes; atomic, so duplicates accumulate).
// Where an index repeats, the order of its additions, and so the sum's last bits, can change from
// run to run: the one kernel here whose result is not fixed by its inputs (the CPU twin adds in
// order). The training step reaches it with unique indices only (the BAM loss's top-k columns);
// a caller with repeats gets rounding noise in the last bits.
void scatter_add(DType dtype, void* out, const int64_t* index, const void* src, int64_t outer, int64_t out_dim,
                 int64_t index_dim, int64_t inner, int64_t* error, void* stream);
// out[o, k, i] = x[o, index[k], i]
void index_select(DType dtype, const void* x, const int64_t* index, void* out, int64_t outer, int64_t x_dim,
                  int64_t num_indices, int64_t inner, int64_t* error, void* stream);
// out[o, index[k], i] += src[o, k, i]   (atomic, as scatter_add: repeated indices add in any order)
void index_add(DType dtype, void* out, const int64_t* index, const void* src, int64_t outer, int64_t out_dim,
               int64_t num_indices, int64_t inner, int64_t* error, void* stream);

// Per row of [rows, cols]: the k largest (or smallest) values in order, ties broken by the lower
// index, NaN ranked before everything (the CPU twin's order). One block per row, k selection passes.
void topk(DType dtype, const void* x, void* values, int64_t* indices, int64_t rows, int64_t cols, int64_t k,
          bool largest, void* stream);

}  // namespace bam::cuda_kernels
