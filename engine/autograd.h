// Define-by-run autograd: each differentiable op records a Node with its inputs and a backward
// function; Tensor::backward walks the nodes in reverse topological order, accumulating gradients.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace bam {

// Given d(loss)/d(output), returns d(loss)/d(input_i) for each input (an undefined Tensor where
// an input needs no gradient). Runs with gradient recording off.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node;

// Where the gradient of one input of a node goes: the node that produced the input, or, for a leaf
// (a parameter, a tensor the user marked requires_grad), the leaf itself, whose .grad accumulates.
// An edge never holds a non-leaf input's data: activations live only as long as the ops' backward
// functions keep what they saved, as in PyTorch, not for as long as the graph exists.
struct Edge {
  std::shared_ptr<Node> producer;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;  // also set, for its error message, on an unconnected input whose version is checked
  DType dtype = DType::f32;
  bool connected() const { return producer || leaf; }
};

// The version of a tensor's storage when an op recorded it (input index, or -1 for the output;
// the shapes are the edge's and the node's).
struct SavedVersion {
  std::weak_ptr<Storage> storage;  // not the data: a storage nobody else keeps may go
  uint64_t version = 0;
  int index = -1;
};

struct Node {
  std::string op_name;
  std::vector<Edge> inputs;  // one per tensor input of the op; unconnected where no gradient is needed
  // Every input's and the output's storage version at the forward: backward refuses to run when
  // one changed in place since (its closure would read the new values), as torch does.
  std::vector<SavedVersion> versions;
  BackwardFn backward;
  std::weak_ptr<TensorImpl> output;  // for retain_grad()
  Shape output_shape;
  DType output_dtype = DType::f32;
  bool released = false;  // true once backward freed the saved state
};

// True when ops record the graph (false inside a NoGradGuard); thread-local.
bool grad_mode_enabled();

// Sets gradient recording in this thread for the guard's lifetime, then restores it.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// Recording off (inference, backward closures, optimizer updates).
struct NoGradGuard : GradModeGuard {
  NoGradGuard() : GradModeGuard(false) {}
};
// Recording back on: a backward function that recomputes part of the forward records that
// recomputation (engine/checkpoint.h).
struct EnableGradGuard : GradModeGuard {
  EnableGradGuard() : GradModeGuard(true) {}
};

// True when an op with these inputs must record a node (grad mode on and any input requires grad).
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attaches a node to `output` when recording is needed; returns output for chaining.
// The backward function must not capture `output` itself (that would form a cycle): capture
// `output.detach()` instead when backward needs the result.
Tensor record(const char* op_name, Tensor output, std::vector<Tensor> inputs, BackwardFn backward);

// Runs backward from `root` with the given gradient (engine behind Tensor::backward).
void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

}  // namespace bam
