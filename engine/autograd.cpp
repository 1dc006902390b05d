// The backward engine: topological order over grad_fn nodes, gradient accumulation, graph release.
#include "engine/autograd.h"

#include <fmt/format.h>

#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "engine/error.h"
#include "engine/ops.h"

namespace bam {
namespace {
thread_local bool t_grad_mode = true;
}

bool grad_mode_enabled() { return t_grad_mode; }

GradModeGuard::GradModeGuard(bool enabled) : previous_(t_grad_mode) { t_grad_mode = enabled; }
GradModeGuard::~GradModeGuard() { t_grad_mode = previous_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_mode) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
// Ops whose backward reads neither their inputs' values nor their output's (sums, views, copies,
// moves by a kept index, linear resamplings): changing those in place after the forward is fine,
// as in torch, and is not checked.
bool backward_reads_no_values(std::string_view op) {
  static const std::unordered_set<std::string_view> ops = {"add",
                                                           "sub",
                                                           "sum",
                                                           "cat",
                                                           "clone",
                                                           "contiguous",
                                                           "expand",
                                                           "permute",
                                                           "reshape",
                                                           "view",
                                                           "slice",
                                                           "squeeze",
                                                           "unsqueeze",
                                                           "residual_add",
                                                           "to_device",
                                                           "to_dtype",
                                                           "gather",
                                                           "index_select",
                                                           "scatter_add",
                                                           "topk",
                                                           "patchify",
                                                           "all_gather_rows",
                                                           "sum_over_ranks",
                                                           "interpolate_bicubic"};
  return ops.count(op) > 0;
}
}  // namespace

Tensor record(const char* op_name, Tensor output, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return output;
  auto node = std::make_shared<Node>();
  node->op_name = op_name;
  // Inputs that need no gradient get no edge; a non-leaf input is reached through its producer.
  node->inputs.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    if (!input.defined() || !input.requires_grad()) continue;
    Edge& edge = node->inputs[i];
    if (input.grad_fn())
      edge.producer = input.grad_fn();
    else
      edge.leaf = input.impl_ptr();
    edge.shape = input.shape();
    edge.dtype = input.dtype();
  }
  if (!backward_reads_no_values(op_name)) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].defined()) continue;
      node->versions.push_back({inputs[i].storage(), inputs[i].storage()->version(), static_cast<int>(i)});
      if (!node->inputs[i].connected()) node->inputs[i].shape = inputs[i].shape();  // for the error alone
    }
    node->versions.push_back({output.storage(), output.storage()->version(), -1});
  }
  node->backward = std::move(backward);
  node->output = output.impl_ptr();
  node->output_shape = output.shape();
  node->output_dtype = output.dtype();
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
  return output;
}

namespace {

// Nodes reachable from root, ordered so that every node comes before the nodes it depends on.
// Shared pointers keep every node alive while backward releases their inputs one by one.
std::vector<std::shared_ptr<Node>> topological_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> postorder;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack;  // node, next input to visit
  stack.emplace_back(root, 0);
  visited.insert(root.get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const std::shared_ptr<Node>& child = node->inputs[next++].producer;
      if (child && visited.insert(child.get()).second) stack.emplace_back(child, 0);
      continue;
    }
    postorder.push_back(node);
    stack.pop_back();
  }
  return {postorder.rbegin(), postorder.rend()};
}

void accumulate_leaf_grad(TensorImpl* leaf, const Tensor& grad) {
  if (!leaf->grad) {
    // A fresh copy: the incoming gradient may share memory with another leaf's gradient
    // (add's backward hands the same tensor to both inputs), and optimizers update grads in place.
    leaf->grad = (grad.is_contiguous() ? grad.clone() : grad.contiguous()).impl_ptr();  // one copy either way
  } else {
    Tensor current(leaf->grad);
    leaf->grad = add(current, grad).impl_ptr();
  }
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  BAM_CHECK(root.defined(), "backward: called on an undefined tensor");
  BAM_CHECK(root.requires_grad(),
            "backward: tensor {} does not require grad (no input of the computation had "
            "requires_grad set, or it was computed under NoGradGuard)",
            root.describe());
  Tensor grad = gradient;
  if (!grad.defined()) {
    BAM_CHECK(root.numel() == 1, "backward: a gradient must be given for a non-scalar tensor {} (pass one of shape {})",
              root.describe(), shape_str(root.shape()));
    grad = ones_like(root);
  } else {
    BAM_CHECK(grad.shape() == root.shape(), "backward: gradient of shape {} given for a tensor of shape {}",
              shape_str(grad.shape()), shape_str(root.shape()));
    BAM_CHECK(grad.device() == root.device(), "backward: gradient on {} for a tensor on {}", grad.device().str(),
              root.device().str());
    if (grad.dtype() != root.dtype()) grad = grad.to(root.dtype());
  }

  NoGradGuard no_grad;
  if (!root.grad_fn()) {
    accumulate_leaf_grad(root.impl(), grad);
    return;
  }
  std::vector<std::shared_ptr<Node>> order = topological_order(root.grad_fn());
  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = grad;

  for (const std::shared_ptr<Node>& node_ptr : order) {
    Node* node = node_ptr.get();
    auto it = pending.find(node);
    if (it == pending.end()) continue;  // no gradient reached this node
    Tensor grad_output = std::move(it->second);
    pending.erase(it);
    BAM_CHECK(!node->released,
              "backward: the graph through '{}' was already freed by an earlier backward(); "
              "pass retain_graph=true to the first call to backpropagate twice",
              node->op_name);
    for (const SavedVersion& saved : node->versions)
      if (auto storage = saved.storage.lock(); storage && storage->version() != saved.version)
        fail(
            "backward of '{}': its {} {} was changed in place after the forward (fill_, copy_, add_, mul_, an "
            "optimizer "
            "step or a weight load; version {}, {} at the forward), and its gradient would be computed from the new "
            "values: change a clone, or run backward first",
            node->op_name, saved.index < 0 ? std::string("output") : fmt::format("input {}", saved.index),
            shape_str(saved.index < 0 ? node->output_shape : node->inputs[static_cast<size_t>(saved.index)].shape),
            storage->version(), saved.version);
    if (auto output = node->output.lock(); output && output->retains_grad) {
      Tensor keep = grad_output.clone();
      output->grad = output->grad ? add(Tensor(output->grad), keep).impl_ptr() : keep.impl_ptr();
    }
    std::vector<Tensor> input_grads = node->backward(grad_output);
    BAM_CHECK(input_grads.size() == node->inputs.size(), "backward of '{}' returned {} gradients for {} inputs",
              node->op_name, input_grads.size(), node->inputs.size());
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Edge& edge = node->inputs[i];
      Tensor& g = input_grads[i];
      if (!edge.connected() || !g.defined()) continue;
      if (edge.leaf && !edge.leaf->requires_grad) continue;  // switched off since the forward
      BAM_CHECK(g.shape() == edge.shape, "backward of '{}': gradient {} for input {} of shape {} has the wrong shape",
                node->op_name, shape_str(g.shape()), i, shape_str(edge.shape));
      if (g.dtype() != edge.dtype) g = g.to(edge.dtype);
      if (Node* producer = edge.producer.get()) {
        auto [slot, inserted] = pending.try_emplace(producer, g);
        if (!inserted) slot->second = add(slot->second, g);
      } else {
        accumulate_leaf_grad(edge.leaf.get(), g);
      }
    }
    if (!retain_graph) {
      node->inputs.clear();
      node->backward = nullptr;
      node->released = true;
    }
  }
}

}  // namespace bam
