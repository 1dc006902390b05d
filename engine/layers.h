// Basic layers built on the op API: Linear, LayerNorm, BatchNorm1d. Parameter names follow PyTorch
// ("weight", "bias", "running_mean", "running_var") so state maps line up with timm checkpoints.
#pragma once

#include "engine/module.h"
#include "engine/ops.h"

namespace bam {

class Generator;

// y = x W^T + b with W [out, in]. Initialised as timm does for ViT Linear layers: W from a
// normal(0, 0.02) truncated to [-2, 2], b = 0.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator* gen);
  // Under autocast (engine/autocast.h) x, weight and bias are cast to the 16-bit compute type.
  Tensor forward(const Tensor& x) const;
  // forward(gelu(h)), with the GELU recomputed in backward instead of kept (gelu_linear).
  Tensor forward_of_gelu(const Tensor& h) const;
  Tensor weight, bias;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t features, double eps = 1e-6);
  // 16-bit inputs (autocast) are normalised in f32; the output is f32.
  Tensor forward(const Tensor& x) const;
  // For a LayerNorm that feeds a Linear: normalised in f32 as forward(), written in the autocast
  // compute type (autocast_compute_dtype), so the Linear needs no cast. forward() without autocast.
  Tensor forward_compute(const Tensor& x) const;
  Tensor weight, bias;

 private:
  double eps_;
};

// BatchNorm over [N, C]: batch statistics in training (updating the running ones), running
// statistics in eval. affine = false drops weight/bias (the projector's last BN). When the
// process trains with others (process_group(), engine/communicator.h), training takes the
// statistics over every rank's batch, as torch's SyncBatchNorm does.
class BatchNorm1d : public Module {
 public:
  explicit BatchNorm1d(int64_t features, bool affine = true, double momentum = 0.1, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias, running_mean, running_var;

 private:
  double momentum_, eps_;
};

}  // namespace bam
