// Optimizer bookkeeping (groups, state slots, checkpoint state) and the update dispatch.
#include "engine/optim.h"

#include <cmath>
#include <map>

#include "engine/autograd.h"
#include "engine/error.h"
#include "kernels/cpu/optimizer.h"

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
void require_f32_cpu(const Tensor& t, const char* what) {
  BAM_CHECK(t.dtype() == DType::f32 && t.device().is_cpu() && t.is_contiguous(),
            "optimizer: {} {} must be a contiguous f32 CPU tensor (the CUDA update lives with the CUDA backend)",
            what, t.describe());
}
}  // namespace

void Optimizer::step() {
  NoGradGuard no_grad;
  ++steps_;
  size_t index = 0;
  for (auto& group : groups_) {
    for (auto& [name, param] : group.params) {
      if (slots_.size() <= index) slots_.resize(index + 1);
      Tensor grad = param.grad();
      if (grad.defined()) {
        if (!grad.is_contiguous()) grad = grad.contiguous();
        update(param, grad, slots_[index], group.decay ? weight_decay_ : 0.0);
      }
      ++index;
    }
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
      if (index < slots_.size())
        for (size_t s = 0; s < slots_[index].size(); ++s)
          if (slots_[index][s].defined()) out.emplace_back(name + "." + names[s], slots_[index][s]);
      ++index;
    }
  return out;
}

void Optimizer::load_state(const NamedTensors& state, int64_t steps) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  std::vector<std::string> names = slot_names();
  size_t index = 0;
  slots_.clear();
  for (const auto& group : groups_)
    for (const auto& [name, param] : group.params) {
      slots_.emplace_back();
      for (const auto& slot : names) {
        auto it = by_name.find(name + "." + slot);
        if (it == by_name.end()) {
          slots_[index].clear();  // a parameter without state starts fresh (all slots or none)
          break;
        }
        BAM_CHECK(it->second.shape() == param.shape(), "optimizer state '{}.{}' has shape {} but the parameter is {}",
                  name, slot, shape_str(it->second.shape()), shape_str(param.shape()));
        slots_[index].push_back(it->second.to(DType::f32).contiguous().clone());
      }
      ++index;
    }
  steps_ = steps;
}

namespace {
// Ensures `count` zero-initialised slots shaped like param; returns true if they were just made.
bool ensure_slots(std::vector<Tensor>& slots, const Tensor& param, size_t count) {
  if (slots.size() == count) return false;
  slots.clear();
  for (size_t i = 0; i < count; ++i) slots.push_back(zeros(param.shape()));
  return true;
}
}  // namespace

void AdamW::update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay) {
  require_f32_cpu(param, "parameter");
  require_f32_cpu(grad, "gradient");
  ensure_slots(slots, param, 2);
  cpu::adamw_update(param.data<float>(), grad.data<float>(), slots[0].data<float>(), slots[1].data<float>(),
                    param.numel(), lr_, beta1_, beta2_, eps_, weight_decay, steps_);
}

void SGD::update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay) {
  require_f32_cpu(param, "parameter");
  require_f32_cpu(grad, "gradient");
  bool first = ensure_slots(slots, param, 1);
  cpu::sgd_update(param.data<float>(), grad.data<float>(), slots[0].data<float>(), param.numel(), lr_, momentum_,
                  weight_decay, first);
}

void LARS::update(Tensor& param, const Tensor& grad, std::vector<Tensor>& slots, double weight_decay) {
  require_f32_cpu(param, "parameter");
  require_f32_cpu(grad, "gradient");
  ensure_slots(slots, param, 1);
  cpu::lars_update(param.data<float>(), grad.data<float>(), slots[0].data<float>(), param.numel(), param.dim() > 1,
                   lr_, momentum_, weight_decay, eta_);
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<ParamGroup> groups) {
  if (name == "adamw") return std::make_unique<AdamW>(std::move(groups));
  if (name == "sgd") return std::make_unique<SGD>(std::move(groups));
  if (name == "lars") return std::make_unique<LARS>(std::move(groups));
  fail("--optimizer: unknown optimizer '{}' (choose adamw, sgd or lars)", name);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    require_f32_cpu(g, "gradient");
    total += cpu::sum_of_squares(g.data<float>(), g.numel());
  }
  double norm = std::sqrt(total);
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (const Tensor& p : params)
      if (Tensor g = p.grad(); g.defined()) cpu::scale_in_place(g.data<float>(), g.numel(), static_cast<float>(coef));
  return norm;
}

void clip_grad_per_param(const std::vector<Tensor>& params, double max_norm) {
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    require_f32_cpu(g, "gradient");
    double norm = std::sqrt(cpu::sum_of_squares(g.data<float>(), g.numel()));
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) cpu::scale_in_place(g.data<float>(), g.numel(), static_cast<float>(coef));
  }
}

}  // namespace bam
