// Tensor basics: metadata, data access, autograd accessors, copies/conversions, in-place updates.
#include "engine/tensor.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/device_copy.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/cpu/copy.h"

namespace bam {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape)
    BAM_CHECK(!__builtin_mul_overflow(n, s, &n), "shape {} has more elements than 2^63", shape_str(shape));
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= std::max<int64_t>(shape[d], 1);
  }
  return strides;
}

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* what) {
  // A 0-d tensor has no dimension to name (reductions take one on their own: reduction_dims).
  int64_t d = dim < 0 ? dim + ndim : dim;
  BAM_CHECK(d >= 0 && d < ndim, "{}: dimension {} is out of range for a {}-d tensor", what, dim, ndim);
  return d;
}

// ---- metadata -------------------------------------------------------------------------------

#define BAM_REQUIRE_DEFINED(what) BAM_CHECK(impl_, "{}: the tensor is undefined", what)

const Shape& Tensor::shape() const {
  BAM_REQUIRE_DEFINED("shape");
  return impl_->shape;
}
const Shape& Tensor::strides() const {
  BAM_REQUIRE_DEFINED("strides");
  return impl_->strides;
}
int64_t Tensor::offset() const { return impl_->offset; }
int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[normalize_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const {
  BAM_REQUIRE_DEFINED("dtype");
  return impl_->dtype;
}
Device Tensor::device() const {
  BAM_REQUIRE_DEFINED("device");
  return impl_->storage->device();
}
const std::string& Tensor::name() const { return impl_->name; }
Tensor& Tensor::set_name(const std::string& name) {
  impl_->name = name;
  return *this;
}
const std::shared_ptr<Storage>& Tensor::storage() const { return impl_->storage; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to be out of place (as PyTorch): no copy, no refusal
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (impl_->shape[d] == 1) continue;
    if (impl_->strides[d] != expected) return false;
    expected *= impl_->shape[d];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!impl_) return "<undefined>";
  std::string s = fmt::format("{}{} on {}", dtype_name(dtype()), shape_str(shape()), device().str());
  if (!impl_->name.empty()) s = "'" + impl_->name + "' " + s;
  return s;
}

void* Tensor::raw_data() const {
  BAM_REQUIRE_DEFINED("data");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * dtype_size(impl_->dtype);
}

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16_t>() { return DType::bf16; }
template <> constexpr DType dtype_of<f16_t>() { return DType::f16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<bool>() { return DType::boolean; }

template <typename T>
T* Tensor::data() const {
  BAM_CHECK(dtype() == dtype_of<T>(), "data<{}>() called on a tensor of dtype {}", dtype_name(dtype_of<T>()),
            dtype_name(dtype()));
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template bf16_t* Tensor::data<bf16_t>() const;
template f16_t* Tensor::data<f16_t>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template bool* Tensor::data<bool>() const;

// ---- autograd accessors -----------------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::requires_grad_(bool value) {
  BAM_REQUIRE_DEFINED("requires_grad_");
  BAM_CHECK(is_leaf() || value, "requires_grad_(false) on {}: only leaves can stop requiring grad; use detach()",
            describe());
  BAM_CHECK(!value || is_floating(dtype()), "requires_grad_: {} is not a floating-point tensor", describe());
  impl_->requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { return !impl_->grad_fn; }
Tensor Tensor::grad() const { return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
void Tensor::set_grad(const Tensor& grad) const {
  if (grad.defined())
    BAM_CHECK(grad.shape() == shape(), "set_grad: gradient {} does not match {}", grad.describe(), describe());
  impl_->grad = grad.impl_ptr();
}
Tensor& Tensor::retain_grad() {
  if (!is_leaf()) impl_->retains_grad = true;
  return *this;
}
const std::shared_ptr<Node>& Tensor::grad_fn() const { return impl_->grad_fn; }

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  run_backward(*this, gradient, retain_graph);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->offset = impl_->offset;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

// ---- copies and conversions -------------------------------------------------------------------

namespace {

// A contiguous copy of `src` with the given dtype on src's device (no autograd).
Tensor copy_to_contiguous(const Tensor& src, DType dtype) {
  Tensor out = empty(src.shape(), {dtype, src.device()});
  copy_into(out, src);
  return out;
}

}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = copy_to_contiguous(*this, dtype());
  return record("contiguous", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::clone() const {
  Tensor out = copy_to_contiguous(*this, dtype());
  return record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = copy_to_contiguous(*this, target);
  if (!is_floating(target) || !is_floating(dtype())) return out;
  DType source = dtype();
  return record("to_dtype", out, {*this}, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor src = is_contiguous() ? *this : copy_to_contiguous(*this, dtype());
  Tensor out = empty(shape(), {dtype(), target});
  size_t nbytes = static_cast<size_t>(numel()) * element_size();
  if (target.is_cuda() && device().is_cpu()) {
    cuda::copy_bytes(out.raw_data(), src.raw_data(), nbytes, cuda::CopyKind::host_to_device);
  } else if (target.is_cpu() && device().is_cuda()) {
    cuda::copy_bytes(out.raw_data(), src.raw_data(), nbytes, cuda::CopyKind::device_to_host);
  } else {
    cuda::copy_bytes(out.raw_data(), src.raw_data(), nbytes, cuda::CopyKind::device_to_device);
  }
  Device source = device();
  return record("to_device", out, {*this}, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
}

double Tensor::item() const {
  BAM_CHECK(numel() == 1, "item(): tensor {} has {} elements, not 1", describe(), numel());
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  return cpu::read_as_double(host.raw_data(), dtype(), 0);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  NoGradGuard no_grad;
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  Tensor converted = host.dtype() == dtype_of<T>() && host.is_contiguous() ? host : copy_to_contiguous(host, dtype_of<T>());
  const T* p = converted.data<T>();
  return std::vector<T>(p, p + numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

// ---- in-place ---------------------------------------------------------------------------------

namespace {
// Every in-place write through a tensor passes here: refused on a tensor autograd tracks, and
// counted in its storage's version otherwise.
void check_inplace_allowed(const Tensor& t, const char* op) {
  BAM_CHECK(!(grad_mode_enabled() && t.requires_grad()),
            "{}: in-place update of {} which takes part in autograd; wrap it in NoGradGuard (optimizer "
            "updates) or use the out-of-place op",
            op, t.describe());
  for (int64_t d = 0; d < t.dim(); ++d)  // as torch: the threads writing such a view would race
    BAM_CHECK(t.strides()[d] != 0 || t.shape()[d] <= 1,
              "{}: in-place update of {}, whose elements share memory (an expanded view, stride 0 in dim {}); "
              "update a contiguous copy",
              op, t.describe(), d);
  t.storage()->bump_version();
}
}  // namespace

Tensor& Tensor::fill_(double value) {
  check_inplace_allowed(*this, "fill_");
  Tensor v = full({}, value, {dtype(), device()});
  copy_into(*this, v);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace_allowed(*this, "copy_");
  Tensor source = src.device() == device() ? src : src.to(device());
  // A source in this tensor's own memory (x.t().copy_(x)) is read whole before any of it is written.
  if (source.defined() && source.storage() == storage() && !source.same(*this)) {
    NoGradGuard no_grad;
    source = source.clone();
  }
  copy_into(*this, source);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace_allowed(*this, "add_");
  NoGradGuard no_grad;
  Tensor sum = alpha == 1.0 ? add(*this, other) : add(*this, mul(other, alpha));
  copy_into(*this, sum);
  return *this;
}

Tensor& Tensor::move_to_(Device target) {
  BAM_REQUIRE_DEFINED("move_to_");
  if (device() == target) return *this;
  BAM_CHECK(!impl_->grad_fn, "move_to_: {} has autograd history; only leaves (parameters, buffers) move in place",
            describe());
  Tensor moved;
  {
    NoGradGuard no_grad;
    moved = detach().to(target);  // contiguous on the target
  }
  impl_->storage = moved.impl_->storage;
  impl_->strides = moved.impl_->strides;
  impl_->offset = moved.impl_->offset;
  if (impl_->grad) {
    Tensor grad(impl_->grad);
    impl_->grad = grad.detach().to(target).impl_;
  }
  return *this;
}

Tensor& Tensor::mul_(double value) {
  check_inplace_allowed(*this, "mul_");
  NoGradGuard no_grad;
  copy_into(*this, mul(*this, value));
  return *this;
}

}  // namespace bam
