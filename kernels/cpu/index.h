// Indexing kernels over contiguous [outer, dim, inner] layouts: gather / scatter-add along a dim,
// index_select / index_add with a 1-D index, and top-k per row. Indices are i64 and checked.
#pragma once

#include <cstdint>

namespace bam::cpu {

// What an index kernel reports: ok, or the first out-of-range index value it met.
struct IndexResult {
  bool ok = true;
  int64_t bad_index = 0;
};

// out[o, j, i] = x[o, index[o, j, i], i]; x is [outer, x_dim, inner], index/out [outer, index_dim, inner].
template <typename T>
IndexResult gather(const T* x, const int64_t* index, T* out, int64_t outer, int64_t x_dim, int64_t index_dim,
               int64_t inner);

// out[o, index[o, j, i], i] += src[o, j, i]; out is [outer, out_dim, inner]. 
template <typename T>
IndexResult scatter_add(T* out, const int64_t* index, const T* src, int64_t outer, int64_t out_dim, int64_t index_dim,
                    int64_t inner);

// out[o, k, i] = x[o, index[k], i] for k < num_indices. 
template <typename T>
IndexResult index_select(const T* x, const int64_t* index, T* out, int64_t outer, int64_t x_dim, int64_t num_indices,
                     int64_t inner);

// out[o, index[k], i] += src[o, k, i] (duplicates accumulate).
template <typename T>
IndexResult index_add(T* out, const int64_t* index, const T* src, int64_t outer, int64_t out_dim, int64_t num_indices,
                  int64_t inner);

// Per row of [rows, cols]: the k largest (or smallest) values in order, ties broken by the lower
// index, NaN ranked above every value (as PyTorch does: first when largest, last when smallest).
template <typename T>
void topk(const T* x, T* values, int64_t* indices, int64_t rows, int64_t cols, int64_t k, bool largest);

}  // namespace bam::cpu
