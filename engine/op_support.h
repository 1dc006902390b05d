// Helpers shared by the op implementations (engine/ops_*.cpp): validation, dtype dispatch,
// broadcasting, contiguous inputs. Internal to the engine.
#pragma once

#include <initializer_list>

#include "engine/device_copy.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/cpu/elementwise.h"

namespace bam::detail {

// All defined tensors on one device, which is returned (the CPU when none is defined).
Device same_device(const char* op, std::initializer_list<const Tensor*> tensors);
void require_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void require_floating(const char* op, const Tensor& t);

// Calls fn with the unsigned integer of dtype's size (uint8_t, uint16_t, uint32_t or uint64_t): for
// ops that only move elements, every dtype is words of its size, as in the CUDA kernels.
template <typename Fn>
void dispatch_word(DType dtype, Fn&& fn) {
  switch (dtype_size(dtype)) {
    case 1: fn(uint8_t{}); return;
    case 2: fn(uint16_t{}); return;
    case 4: fn(uint32_t{}); return;
    default: fn(uint64_t{}); return;
  }
}

// Calls fn(float{}) or fn(double{}) for the tensor's dtype; other dtypes fail naming the op.
template <typename Fn>
void dispatch_floating(const char* op, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    default:
      fail("{}: dtype {} is not supported on the CPU (use f32 or f64; bf16/f16 are for CUDA mixed precision)", op,
           dtype_name(dtype));
  }
}

// In ops with a CUDA branch: `stmt` in a CUDA build; elsewhere a CUDA tensor cannot exist, and
// reaching the branch is an error naming the op.
#ifdef BAM_WITH_CUDA
#define BAM_CUDA_BRANCH(op, ...) __VA_ARGS__
#else
#define BAM_CUDA_BRANCH(op, ...) ::bam::fail("{}: this build has no CUDA backend", op)
#endif

// The dtype of saved statistics (mean, rstd, norms, log-sum-exp): the compute precision, f64 for
// f64 and f32 otherwise, so 16-bit activations keep exact statistics for backward.
inline DType stat_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

// The broadcast shape of a and b (NumPy rules); fails naming the op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// x itself when contiguous, else a contiguous copy without autograd history.
Tensor contiguous_data(const Tensor& x);

// g * f'(x) for a unary op, through its backward kernels (engine/ops_elementwise.cpp); x or y (the
// forward output) may be undefined when the derivative does not read it. Any layout.
Tensor unary_grad(cpu::UnaryOp op, const char* name, const Tensor& x, const Tensor& y, const Tensor& g,
                  cpu::UnaryArgs args = {});

// Normalised, sorted, de-duplicated dims; an empty list means every dim.
Shape reduction_dims(const Shape& dims, int64_t ndim, const char* op);
// The shape after reducing `dims` (kept as size 1 when keepdim).
Shape reduced_shape(const Shape& shape, const Shape& dims, bool keepdim);

// A contiguous copy (or x itself) with dimension `dim` moved last, for row kernels.
Tensor move_dim_last(const Tensor& x, int64_t dim);
// The inverse of move_dim_last for a contiguous result: a (non-contiguous) view in x's layout.
Tensor restore_dim(const Tensor& y_last, int64_t dim);

}  // namespace bam::detail
