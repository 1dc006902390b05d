// Module: a named tree of parameters and buffers (the PyTorch nn.Module idea). Names join with
// dots ("blocks.3.attn.qkv.weight"), which is what checkpoints and parameter groups key on.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace bam {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter (tensors that train) and buffer (state such as BatchNorm running
  // statistics) of this module and its children, in registration order.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;

  // Training mode affects BatchNorm (batch statistics), dropout and stochastic depth.
  void train(bool on = true);
  // Moves every parameter and buffer to `device` in place (layers keep seeing their tensors).
  void to(Device device);
  bool is_training() const { return training_; }

  // Copies values from `source` (same names and shapes) into this module's tensors in place.
  void load_state(const NamedTensors& source, bool strict = true);
  // Every parameter and buffer by name.
  NamedTensors state() const;

 protected:
  Tensor& register_parameter(const std::string& name, Tensor value);
  Tensor& register_buffer(const std::string& name, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    children_.emplace_back(name, child);
    return child;
  }

 private:
  void collect(NamedTensors& out, const std::string& prefix, bool buffers) const;

  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace bam
