// Tensor: a shared handle to (storage, shape, strides, offset, dtype) plus autograd state.
// Views (reshape, permute, narrow, expand, ...) share storage; ops live in engine/ops.h.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/storage.h"

namespace bam {

using Shape = std::vector<int64_t>;

class Tensor;
struct Node;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);
// Row-major strides of a contiguous tensor of this shape.
Shape contiguous_strides(const Shape& shape);

// The state behind a Tensor handle. Autograd fields: `grad_fn` is the node that produced this
// tensor (null for leaves); `grad` accumulates d(loss)/d(this) for leaves that require grad.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements, from the start of storage
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool retains_grad = false;  // non-leaf that keeps its grad (retain_grad())
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
  std::string name;  // optional, for parameters and error messages
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

  // ---- metadata ----
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  // size(d) and stride(d) accept negative dims (counted from the end).
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  size_t element_size() const { return static_cast<size_t>(dtype_size(dtype())); }
  const std::string& name() const;
  Tensor& set_name(const std::string& name);
  std::string describe() const;  // "f32[2, 3] on cpu"

  // Pointer to the first element (storage + offset), typed; checks the dtype for T.
  template <typename T>
  T* data() const;
  void* raw_data() const;
  const std::shared_ptr<Storage>& storage() const;

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as a parameter: backward() will accumulate its gradient into grad().
  Tensor& requires_grad_(bool value = true);
  bool is_leaf() const;
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  // Keeps this non-leaf tensor's gradient after backward (off by default, as in PyTorch).
  Tensor& retain_grad();
  const std::shared_ptr<Node>& grad_fn() const;
  // Backpropagates from this tensor. A scalar needs no gradient; otherwise pass one of the same
  // shape. The graph is freed afterwards unless retain_graph is true.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  // Same storage, no history.
  Tensor detach() const;

  // ---- views (share storage; differentiable) ----
  Tensor view(const Shape& shape) const;     // needs a compatible layout; -1 infers one size
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const;  // transpose of a 2-D tensor
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // removes the dimension
  Tensor expand(const Shape& shape) const;          // -1 keeps a size; new leading dims allowed
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor contiguous() const;  // itself when already contiguous, else a differentiable copy

  // ---- copies and conversions ----
  Tensor to(DType dtype) const;  // differentiable between floating types
  Tensor to(Device device) const;
  Tensor clone() const;
  double item() const;  // the value of a one-element tensor, as double
  template <typename T>
  std::vector<T> to_vector() const;  // all elements in row-major order, converted to T

  // ---- in-place (not differentiable; refused on tensors that take part in autograd) ----
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape, converted to this dtype
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double value);
  // Moves this leaf's values (and its gradient) to `device` in place: every Tensor sharing this
  // one (a module's parameter and the layer holding it) sees the move. For Module::to.
  Tensor& move_to_(Device device);

  std::string str() const;  // readable printing, elided when large

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories ----
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
};

Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
// [start, end) with the given step; the dtype defaults to i64 when unspecified.
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {DType::i64});
Tensor arange(int64_t end, TensorOptions options = {DType::i64});
Tensor scalar_tensor(double value, TensorOptions options = {});
// Copies host values into a new tensor of the given shape (converted to options.dtype).
Tensor from_vector(const std::vector<float>& values, const Shape& shape, TensorOptions options = {});
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions options = {DType::f64});
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape, TensorOptions options = {DType::i64});
// Makes a tensor over existing memory (no copy); the caller keeps the memory alive.
Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device = Device::cpu());

// Random factories draw from the default generator (engine/random.h) unless one is given.
class Generator;
Tensor rand(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);   // U[0,1)
Tensor randn(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);  // N(0,1)
// Normal(mean, std) truncated to [low, high], as timm's trunc_normal_.
Tensor trunc_normal(const Shape& shape, double mean, double std, double low, double high,
                    TensorOptions options = {}, Generator* gen = nullptr);
Tensor randint(int64_t low, int64_t high, const Shape& shape, TensorOptions options = {DType::i64},
               Generator* gen = nullptr);
// A random permutation of [0, n) (i64).
Tensor randperm(int64_t n, Generator* gen = nullptr);

// Normalises a possibly negative dimension index for a tensor of `ndim` dims; names `what` on error.
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* what);

}  // namespace bam
