// Mixed precision, the autocast policy. Inside an AutocastGuard(bf16 or f16), the layers that are
// dominated by matrix products (Linear, hence the patch embedding, qkv, proj, fc1, fc2 and the
// projector; the attention op, which receives qkv in 16 bits) compute in the 16-bit type on the
// tensor cores with f32 accumulation, while everything that sums many terms or exponentiates stays
// in f32: LayerNorm, BatchNorm, the residual stream, and the loss (softmax, Sinkhorn, cross-entropy).
// Parameters stay f32 (the master weights): Linear casts its weight per forward, a recorded op, so
// gradients arrive in f32 and the optimizer never sees 16-bit numbers.
//
// The policy is applied where the layers meet (engine/layers.h, models/, bam_loss), not inside the
// ops: every op still computes in the dtype it is given, which keeps the op contract simple and
// the casts visible in the code that decides them. Two fused ops save the casts at the busiest
// boundaries: LayerNorm writes the compute type for the Linear after it (LayerNorm::forward_compute),
// and residual_add adds a 16-bit branch into the f32 stream. The tensor casts apply to CUDA tensors only (the
// CPU kernels have no 16-bit paths), and only while the guard lives: backward replays the forward's
// dtypes through the recorded casts. On the CPU, bf16 autocast acts inside the ops instead: the
// f32 GEMMs of linear, matmul and gelu_linear round their operands to bf16 (engine/ops_linalg.cpp,
// on AMX tiles or with AVX-512 BF16 where the CPU has them), and their backward restores the
// forward's autocast state.
#pragma once

#include "engine/tensor.h"

namespace bam {

class AutocastGuard {
 public:
  // dtype: bf16 or f16 turns autocast on in this thread for the guard's lifetime; f32 turns it off.
  explicit AutocastGuard(DType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType previous_;
};

// The 16-bit compute type while autocast is on in this thread, else f32.
DType autocast_dtype();

// x in the autocast compute type when autocast is on and x is a floating CUDA tensor; else x.
Tensor autocast_compute(const Tensor& x);
// The dtype autocast_compute(x) has, for ops that write it directly instead of casting afterwards
// (x must be defined).
DType autocast_compute_dtype(const Tensor& x);
// x in f32 when it is a 16-bit float tensor (the "keep in f32" side of the policy); else x.
Tensor autocast_f32(const Tensor& x);

// "f32", "bf16" or "fp16"/"f16" (the --precision flag) -> the autocast dtype; fails naming the value.
DType precision_dtype(const std::string& precision);

}  // namespace bam
