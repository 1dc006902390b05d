// Module tree traversal, mode switching and state loading.
#include "engine/module.h"

#include <map>

#include "engine/autograd.h"
#include "engine/error.h"

namespace bam {

Tensor& Module::register_parameter(const std::string& name, Tensor value) {
  if (!value.requires_grad()) value.requires_grad_(true);
  value.set_name(name);
  parameters_.emplace_back(name, value);
  return parameters_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor value) {
  value.set_name(name);
  buffers_.emplace_back(name, value);
  return buffers_.back().second;
}

void Module::collect(NamedTensors& out, const std::string& prefix, bool buffers) const {
  for (const auto& [name, t] : buffers ? buffers_ : parameters_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(out, prefix + name + ".", buffers);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect(out, "", false);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect(out, "", true);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::to(Device device) {
  for (auto& [name, t] : state()) Tensor(t).move_to_(device);
}

NamedTensors Module::state() const {
  NamedTensors out = named_parameters();
  NamedTensors buffers = named_buffers();
  out.insert(out.end(), buffers.begin(), buffers.end());
  return out;
}

void Module::load_state(const NamedTensors& source, bool strict) {
  std::map<std::string, Tensor> by_name(source.begin(), source.end());
  NoGradGuard no_grad;
  for (auto& [name, target] : state()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      BAM_CHECK(!strict, "load_state: '{}' is missing from the source", name);
      continue;
    }
    BAM_CHECK(it->second.shape() == target.shape(), "load_state: '{}' has shape {} in the source but {} here", name,
              shape_str(it->second.shape()), shape_str(target.shape()));
    // copy_ converts between any types: integers read as weights would be garbage, not an error.
    BAM_CHECK(is_floating(it->second.dtype()) == is_floating(target.dtype()),
              "load_state: '{}' is {} in the source but {} here", name, dtype_name(it->second.dtype()),
              dtype_name(target.dtype()));
    Tensor(target).copy_(it->second);
    by_name.erase(it);
  }
  if (strict && !by_name.empty())
    fail("load_state: the source has {} unexpected tensors, for example '{}'", by_name.size(), by_name.begin()->first);
}

}  // namespace bam
