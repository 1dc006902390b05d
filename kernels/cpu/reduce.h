// Reductions over the middle axis of a contiguous [outer, reduce, inner] layout; any set of
// adjacent dims maps to it, other sets are permuted to the end first by the op layer.
#pragma once

#include <cstdint>

namespace bam::cpu {

enum class ReduceOp { sum, max, min };

// out[o, i] = op over r of x[o, r, i]. Sums accumulate in double. max/min propagate NaN.
template <typename T>
void reduce(ReduceOp op, const T* x, T* out, int64_t outer, int64_t reduce_size, int64_t inner);

// The AVX-512 column sums behind reduce<float>'s sum over a middle axis (reduce_avx512.cpp; only
// when cpu_has_avx512()): out[c] = sum over r of x[r * ld + c] for c < width, in double, rows in
// order, exactly as the portable loop adds them.
void column_sums_f32_avx512(const float* x, int64_t rows, int64_t ld, int64_t width, double* out);

// out[o, i] = the first r where x[o, r, i] is the maximum (or minimum); NaN counts as the extreme.
template <typename T>
void arg_reduce(bool is_max, const T* x, int64_t* out, int64_t outer, int64_t reduce_size, int64_t inner);

}  // namespace bam::cpu
