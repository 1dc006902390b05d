// Optimizer bookkeeping (groups, state slots, checkpoint state) and the update dispatch.
#include "engine/optim.h"

#include <cmath>
#include <map>
#include <utility>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cuda/optimizer.h"

namespace bam {

std::vector<ParamGroup> make_param_groups(const NamedTensors& params) {
  ParamGroup decayed{{}, true}, plain{{}, false};
  for (const auto& [name, p] : params) {
    if (!p.requires_grad()) continue;
    bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    (is_bias || p.dim() == 1 ? plain : decayed).params.emplace_back(name, p);
  }
  return {decayed, plain};
}

namespace {
// Parameters are the fp32 master weights; gradients and state live beside them.
void require_f32(const Tensor& t, const Tensor& param, const char* what) {
  BAM_CHECK(t.dtype() == DType::f32 && t.is_contiguous(), "optimizer: {} {} must be a contiguous f32 tensor", what,
            t.describe());
  BAM_CHECK(t.device() == param.device(), "optimizer: {} {} is not on the parameter's device {}", what, t.describe(),
            param.device().str());
}

#ifdef BAM_WITH_CUDA
void* stream() { return cuda::current_stream(); }
#endif
}  // namespace

void Optimizer::step() {
  NoGradGuard no_grad;
  size_t index = 0;
  // Counted once every update is queued or done: a failed step counts none.
  std::vector<std::pair<size_t, Tensor>> updated;
  try {
    for (auto& group : groups_) {
      for (auto& [name, param] : group.params) {
        if (slots_.size() <= index) slots_.resize(index + 1);
        if (param_steps_.size() <= index) param_steps_.resize(index + 1, 0);
        Tensor grad = param.grad();
        if (grad.defined()) {
          if (!grad.is_contiguous()) grad = grad.contiguous();
          update(param, grad, slots_[index], group.decay ? weight_decay_ : 0.0, param_steps_[index] + 1);
          updated.emplace_back(index, param);
        }
        ++index;
      }
    }
  } catch (...) {
    // A parameter failed its checks: the updates queued before it are dropped, not launched by
    // the next step on top of its own.
    drop_queued();
    pending_grads_.clear();
    throw;
  }
  finish_step();
  pending_grads_.clear();
  ++steps_;
  for (const auto& [i, param] : updated) {
    ++param_steps_[i];
    param.storage()->bump_version();  // written by the kernels, not through the tensor: graphs that read it are stale
  }
}

void Optimizer::zero_grad() {
  for (auto& group : groups_)
    for (auto& [name, param] : group.params) param.set_grad(Tensor());
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  std::vector<std::string> names = slot_names();
  size_t index = 0;
  for (const auto& group : groups_)
    for (const auto& [name, param] : group.params) {
      if (index < slots_.size()) {
        for (size_t s = 0; s < slots_[index].size(); ++s)
          if (slots_[index][s].defined()) out.emplace_back(name + "." + names[s], slots_[index][s]);
        if (uses_param_steps() && !slots_[index].empty())
          out.emplace_back(name + ".step", from_vector(std::vector<int64_t>{param_steps_[index]}, {1}));
      }
      ++index;
    }
  return out;
}

void Optimizer::load_state(const NamedTensors& state, int64_t steps) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  std::vector<std::string> names = slot_names();
  size_t index = 0;
  BAM_CHECK(steps >= 0, "optimizer: {} steps", steps);
  slots_.clear();
  param_steps_.clear();
  for (const auto& group : groups_)
    for (const auto& [name, param] : group.params) {
      slots_.emplace_back();
      param_steps_.push_back(0);
      for (const auto& slot : names) {
        auto it = by_name.find(name + "." + slot);
        if (it == by_name.end()) {
          slots_[index].clear();  // a parameter without state starts fresh (all slots or none)
          break;
        }
        BAM_CHECK(it->second.shape() == param.shape(), "optimizer state '{}.{}' has shape {} but the parameter is {}",
                  name, slot, shape_str(it->second.shape()), shape_str(param.shape()));
        BAM_CHECK(is_floating(it->second.dtype()), "optimizer state '{}.{}' is {}, not floating point", name, slot,
                  dtype_name(it->second.dtype()));
        slots_[index].push_back(it->second.to(DType::f32).to(param.device()).contiguous().clone());
        by_name.erase(it);
      }
      if (uses_param_steps()) {
        auto it = by_name.find(name + ".step");
        if (it != by_name.end()) {
          const Tensor& count = it->second;
          BAM_CHECK(count.dtype() == DType::i64 && count.numel() == 1, "optimizer state '{}.step' is {}, not one i64",
                    name, count.describe());
          const int64_t n = count.to(Device::cpu()).contiguous().data<int64_t>()[0];
          BAM_CHECK(n >= 0 && n <= steps, "optimizer state '{}.step' is {}, outside 0 .. the optimizer's {} steps",
                    name, n, steps);
          BAM_CHECK(!slots_[index].empty() || n == 0,
                    "optimizer state '{}.step' is {} but the parameter has no moments", name, n);
          param_steps_[index] = n;
          by_name.erase(it);
        } else if (!slots_[index].empty()) {
          param_steps_[index] = steps;  // a checkpoint from before the per-parameter counts
        }
      }
      ++index;
    }
  // State of no parameter here: another model's, or a damaged file. And none at all after steps
  // with moments (a parameter may lack them, if it never had a gradient; not every one).
  if (!by_name.empty())
    fail("optimizer state '{}' belongs to no parameter ({} such tensors)", by_name.begin()->first, by_name.size());
  BAM_CHECK(steps == 0 || names.empty() || !state.empty(),
            "no optimizer state after {} optimizer steps: its moments are missing", steps);
  steps_ = steps;
}

namespace {
// Ensures `count` zero-initialised slots shaped like param; returns true if they were just made.
bool ensure_slots(std::vector<Tensor>& slots, const Tensor& param, size_t count) {
  if (slots.size() == count) return false;
  slots.clear();
  for (size_t i = 0; i < count; ++i) slots.push_back(zeros(param.shape(), {DType::f32, param.device()}));
  return true;
}
}  // namespace

void AdamW::update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay,
                   int64_t param_step) {
  require_f32(param, param, "parameter");
  require_f32(grad, param, "gradient");
  ensure_slots(slots, param, 2);
  float *p = param.data<float>(), *m = slots[0].data<float>(), *v = slots[1].data<float>();
  const float* g = grad.data<float>();
  if (param.device().is_cuda()) {
    // Queued for one multi-tensor launch in finish_step(); the gradient (perhaps a contiguous
    // copy made for this step) is kept alive until then.
    pending_.push_back({p, g, m, v, param.numel(), weight_decay, param_step});
    pending_grads_.push_back(grad);
    return;
  }
  cpu::adamw_update(p, g, m, v, param.numel(), lr_, beta1_, beta2_, eps_, weight_decay, param_step);
}

void AdamW::finish_step() {
  if (pending_.empty()) return;
  BAM_CUDA_BRANCH("adamw", cuda_kernels::adamw_update_many(pending_.data(), static_cast<int64_t>(pending_.size()), lr_,
                                                           beta1_, beta2_, eps_, stream()));
  pending_.clear();
}

void SGD::update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay, int64_t) {
  require_f32(param, param, "parameter");
  require_f32(grad, param, "gradient");
  bool first = ensure_slots(slots, param, 1);
  if (param.device().is_cuda()) {  // queued for finish_step()
    pending_.push_back({param.data<float>(), grad.data<float>(), slots[0].data<float>(), param.numel(), weight_decay,
                        first, false});
    pending_grads_.push_back(grad);
    return;
  }
  cpu::sgd_update(param.data<float>(), grad.data<float>(), slots[0].data<float>(), param.numel(), lr_, momentum_,
                  weight_decay, first);
}

void SGD::finish_step() {
  if (pending_.empty()) return;
  BAM_CUDA_BRANCH("sgd", cuda_kernels::sgd_update_many(pending_.data(), static_cast<int64_t>(pending_.size()), lr_,
                                                       momentum_, stream()));
  pending_.clear();
}

void LARS::update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay, int64_t) {
  require_f32(param, param, "parameter");
  require_f32(grad, param, "gradient");
  ensure_slots(slots, param, 1);
  if (param.device().is_cuda()) {  // queued for finish_step()
    pending_.push_back({param.data<float>(), grad.data<float>(), slots[0].data<float>(), param.numel(), weight_decay,
                        false, param.dim() != 1});
    pending_grads_.push_back(grad);
    return;
  }
  cpu::lars_update(param.data<float>(), grad.data<float>(), slots[0].data<float>(), param.numel(), param.dim() != 1,
                   lr_, momentum_, weight_decay, eta_);
}

void LARS::finish_step() {
  if (pending_.empty()) return;
  // Two sums per tensor (||p||^2, ||g + wd p||^2), accumulated and read on the device.
  const auto count = static_cast<int64_t>(pending_.size());
  Tensor norms = empty({2 * count}, {DType::f64, pending_grads_.front().device()});
  BAM_CUDA_BRANCH("lars", cuda_kernels::lars_update_many(pending_.data(), count, lr_, momentum_, eta_,
                                                         norms.data<double>(), stream()));
  pending_.clear();
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<ParamGroup> groups) {
  if (name == "adamw") return std::make_unique<AdamW>(std::move(groups));
  if (name == "sgd") return std::make_unique<SGD>(std::move(groups));
  if (name == "lars") return std::make_unique<LARS>(std::move(groups));
  fail("--optimizer: unknown optimizer '{}' (choose adamw, sgd or lars)", name);
}

namespace {

// The gradients of `params` that exist, checked: contiguous f32, all on one device.
std::vector<Tensor> gradients_of(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (Tensor g = p.grad(); g.defined()) {
      require_f32(g, p, "gradient");
      BAM_CHECK(grads.empty() || grads.front().device() == g.device(),
                "clip_grad: gradients on different devices ({} and {})", grads.front().device().str(),
                g.device().str());
      grads.push_back(g);
    }
  return grads;
}

// The sum of the squares of `grads` (not empty) as a 0-d f64 tensor on their device, not read back.
Tensor sum_of_squares_of(const std::vector<Tensor>& grads) {
  Tensor total = zeros({}, {DType::f64, grads.front().device()});
  if (total.device().is_cuda()) {
    // One multi-tensor launch sums the squares into one device double; the host does not wait.
    BAM_CUDA_BRANCH("grad_sum_of_squares", [&] {
      std::vector<cuda_kernels::FloatSpan> spans;
      for (Tensor g : grads) spans.push_back({g.data<float>(), g.numel()});
      cuda_kernels::accumulate_sum_of_squares_many(spans.data(), static_cast<int64_t>(spans.size()),
                                                   total.data<double>(), stream());
    }());
    return total;
  }
  double sum = 0;
  for (const Tensor& g : grads) sum += cpu::sum_of_squares(g.data<float>(), g.numel());
  total.data<double>()[0] = sum;
  return total;
}

}  // namespace

Tensor grad_sum_of_squares(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  const std::vector<Tensor> grads = gradients_of(params);
  return grads.empty() ? Tensor() : sum_of_squares_of(grads);
}

Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads = gradients_of(params);
  if (grads.empty()) return zeros({}, {DType::f64});
  Tensor total = sum_of_squares_of(grads);
  if (total.device().is_cuda()) {
    // Every gradient scaled by the coefficient each block computes from the device's sum: the host
    // never waits.
    BAM_CUDA_BRANCH("clip_grad_norm", [&] {
      std::vector<cuda_kernels::FloatSpan> spans;
      for (Tensor& g : grads) spans.push_back({g.data<float>(), g.numel()});
      cuda_kernels::clip_by_norm_many(spans.data(), static_cast<int64_t>(spans.size()), total.data<double>(), max_norm,
                                      stream());
    }());
    return sqrt(total);
  }
  const double norm = std::sqrt(total.data<double>()[0]);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (const Tensor& g : grads) cpu::scale_in_place(g.data<float>(), g.numel(), static_cast<float>(coef));
  return full({}, norm, {DType::f64});
}

void clip_grad_per_param(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  for (const Tensor& g : gradients_of(params)) {
    if (g.device().is_cuda()) {
      Tensor sum = zeros({1}, {DType::f64, g.device()});
      BAM_CUDA_BRANCH("clip_grad_per_param", [&] {
        cuda_kernels::accumulate_sum_of_squares(g.data<float>(), g.numel(), sum.data<double>(), stream());
        cuda_kernels::clip_by_norm(g.data<float>(), g.numel(), sum.data<double>(), max_norm, stream());
      }());
      continue;
    }
    double norm = std::sqrt(cpu::sum_of_squares(g.data<float>(), g.numel()));
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) cpu::scale_in_place(g.data<float>(), g.numel(), static_cast<float>(coef));
  }
}

void ema_update(const std::vector<Tensor>& ema, const std::vector<Tensor>& x, double momentum) {
  BAM_CHECK(ema.size() == x.size(), "ema_update: {} EMA tensors for {} sources", ema.size(), x.size());
  for (size_t i = 0; i < ema.size(); ++i) {  // every pair is checked before any is updated
    BAM_CHECK(ema[i].shape() == x[i].shape(), "ema_update: shapes differ ({} and {})", ema[i].describe(),
              x[i].describe());
    require_f32(ema[i], ema.front(), "EMA tensor");
    require_f32(x[i], ema.front(), "source tensor");
  }
  std::vector<cuda_kernels::EmaPair> pairs;
  for (size_t i = 0; i < ema.size(); ++i) {
    if (ema[i].device().is_cuda())
      pairs.push_back({ema[i].data<float>(), x[i].data<float>(), ema[i].numel()});
    else
      cpu::ema_update(ema[i].data<float>(), x[i].data<float>(), ema[i].numel(), momentum);
  }
  if (!pairs.empty())
    BAM_CUDA_BRANCH("ema_update", cuda_kernels::ema_update_many(pairs.data(), static_cast<int64_t>(pairs.size()),
                                                                momentum, stream()));
  for (const Tensor& t : ema) t.storage()->bump_version();  // written in place by the kernels
}

}  // namespace bam
