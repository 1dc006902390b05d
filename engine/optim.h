// Optimizers over named f32 parameters: AdamW, SGD with momentum, LARS. Parameters live in
// groups; the first group is weight-decayed and the second is not (biases and 1-d tensors, as
// DINO/BAM's get_params_groups). The learning rate and weight decay are set every step by the
// schedules; optimizer state is exposed by name for checkpoints.
#pragma once

#include <memory>
#include <string>

#include "engine/module.h"
#include "kernels/cuda/optimizer.h"

namespace bam {

struct ParamGroup {
  NamedTensors params;
  bool decay = true;  // applies the current weight decay (false: always 0)
};

// Splits parameters like get_params_groups: {decayed, not decayed (names ending ".bias" or 1-d)}.
std::vector<ParamGroup> make_param_groups(const NamedTensors& params);

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {}
  virtual ~Optimizer() = default;

  void set_lr(double lr) { lr_ = lr; }
  void set_weight_decay(double wd) { weight_decay_ = wd; }
  double lr() const { return lr_; }
  double weight_decay() const { return weight_decay_; }
  int64_t steps() const { return steps_; }

  // Applies one update to every parameter that has a gradient.
  void step();
  // Drops every gradient (the next backward starts from nothing).
  void zero_grad();

  // State tensors by name ("<param>.exp_avg", ...; AdamW's "<param>.step" too) plus the step
  // count, for checkpoints. A parameter without state starts fresh; a checkpoint written before
  // AdamW counted each parameter's steps gives every parameter with moments the optimizer's count.
  NamedTensors state() const;
  void load_state(const NamedTensors& state, int64_t steps);
  const std::vector<ParamGroup>& groups() const { return groups_; }

 protected:
  // Updates one parameter; `slots` are this optimizer's state tensors for it (created on demand);
  // `param_step` counts this parameter's updates, this one included (steps without its gradient
  // are not counted: torch keeps state['step'] per parameter the same way).
  virtual void update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay,
                      int64_t param_step) = 0;
  virtual std::vector<std::string> slot_names() const = 0;
  // True where the updates depend on param_step (AdamW's bias corrections): the counts are then
  // part of the state.
  virtual bool uses_param_steps() const { return false; }
  // Called once after every update() of a step: on CUDA the optimizers queue their updates in
  // update() and launch them here, as one multi-tensor launch (a few for very long lists).
  virtual void finish_step() {}
  // Forgets the updates queued so far (a later parameter of the step failed).
  virtual void drop_queued() {}

  std::vector<ParamGroup> groups_;
  std::vector<Tensor> pending_grads_;  // queued updates' gradients (perhaps contiguous copies), kept
                                       // alive until finish_step() has launched them
  std::vector<std::vector<Tensor>> slots_;  // per parameter, flattened over groups
  std::vector<int64_t> param_steps_;        // per parameter: the updates it had
  double lr_ = 0, weight_decay_ = 0;
  int64_t steps_ = 0;
};

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
      : Optimizer(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {}

 protected:
  void update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay,
              int64_t param_step) override;
  void finish_step() override;
  void drop_queued() override { pending_.clear(); }
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  bool uses_param_steps() const override { return true; }

 private:
  double beta1_, beta2_, eps_;
  std::vector<cuda_kernels::AdamwTensor> pending_;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, double momentum = 0.9) : Optimizer(std::move(groups)), momentum_(momentum) {}

 protected:
  void update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay,
              int64_t param_step) override;
  void finish_step() override;
  void drop_queued() override { pending_.clear(); }
  std::vector<std::string> slot_names() const override { return {"momentum_buffer"}; }

 private:
  double momentum_;
  std::vector<cuda_kernels::MomentumTensor> pending_;
};

class LARS : public Optimizer {
 public:
  LARS(std::vector<ParamGroup> groups, double momentum = 0.9, double eta = 0.001)
      : Optimizer(std::move(groups)), momentum_(momentum), eta_(eta) {}

 protected:
  void update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay,
              int64_t param_step) override;
  void finish_step() override;
  void drop_queued() override { pending_.clear(); }
  std::vector<std::string> slot_names() const override { return {"mu"}; }

 private:
  double momentum_, eta_;
  std::vector<cuda_kernels::MomentumTensor> pending_;
};

// "adamw", "sgd" or "lars"; fails naming the flag value otherwise.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<ParamGroup> groups);

// The sum of the squares of every existing gradient of `params` (contiguous f32, one device), as
// a 0-d f64 tensor on their device, not read back; finite exactly when every gradient is.
// Undefined when none has a gradient.
Tensor grad_sum_of_squares(const std::vector<Tensor>& params);

// Global L2 norm of all gradients; when it exceeds max_norm every gradient is scaled by
// max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping as
// a 0-d f64 tensor on the gradients' device: on CUDA the norm and the scaling stay on the device
// (no host round trip) until someone reads the result with item().
Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// DINO's per-parameter clipping: each gradient scaled to norm <= max_norm on its own.
void clip_grad_per_param(const std::vector<Tensor>& params, double max_norm);

// ema[i] = momentum * ema[i] + (1 - momentum) * x[i], in place, for every pair (the EMA teacher's
// parameters from the student's); f32, all on one device; one multi-tensor launch on CUDA.
void ema_update(const std::vector<Tensor>& ema, const std::vector<Tensor>& x, double momentum);

}  // namespace bam
