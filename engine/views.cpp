// View ops: new shape/strides/offset over the same storage, each with its backward.
#include <algorithm>
#include <numeric>

#include "engine/autograd.h"
#include "engine/device_copy.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {
namespace {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(impl);
}

// Replaces one -1 by the size that keeps numel; checks the product.
Shape infer_shape(const Shape& requested, int64_t numel, const char* op) {
  Shape shape = requested;
  int64_t known = 1, infer_at = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      BAM_CHECK(infer_at < 0, "{}: only one dimension can be -1 in {}", op, shape_str(requested));
      infer_at = static_cast<int64_t>(d);
    } else {
      BAM_CHECK(shape[d] >= 0, "{}: invalid size in shape {}", op, shape_str(requested));
      known *= shape[d];
    }
  }
  if (infer_at >= 0) {
    BAM_CHECK(known != 0 && numel % known == 0, "{}: shape {} is invalid for {} elements", op, shape_str(requested),
              numel);
    shape[infer_at] = numel / known;
  }
  BAM_CHECK(shape_numel(shape) == numel, "{}: shape {} is invalid for {} elements", op, shape_str(requested), numel);
  return shape;
}

// Strides that let `new_shape` view memory laid out as (old_shape, old_strides), if any exist:
// each run of old dims that is contiguous in memory may be regrouped freely.
bool view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& new_shape, Shape* out) {
  Shape strides(new_shape.size(), 1);
  if (old_shape.empty() || shape_numel(old_shape) == 0) {
    *out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    bool chunk_ends = d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
      strides[view_d] = view_numel * chunk_base_stride;
      view_numel *= new_shape[view_d];
      --view_d;
    }
    if (view_numel != tensor_numel) return false;
    if (d > 0) {
      chunk_base_stride = old_strides[d - 1];
      tensor_numel = 1;
      view_numel = 1;
    }
  }
  if (view_d != -1) return false;
  *out = strides;
  return true;
}

BackwardFn reshape_back(Shape input_shape) {
  return [input_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(input_shape)}; };
}

}  // namespace

Tensor Tensor::view(const Shape& requested) const {
  Shape shape = infer_shape(requested, numel(), "view");
  Shape strides;
  BAM_CHECK(view_strides(this->shape(), this->strides(), shape, &strides),
            "view: {} with strides {} cannot be viewed as {}; use reshape (which copies)", describe(),
            shape_str(this->strides()), shape_str(shape));
  return record("view", make_view(*this, shape, strides, offset()), {*this}, reshape_back(this->shape()));
}

Tensor Tensor::reshape(const Shape& requested) const {
  Shape shape = infer_shape(requested, numel(), "reshape");
  Shape strides;
  if (view_strides(this->shape(), this->strides(), shape, &strides))
    return record("reshape", make_view(*this, shape, strides, offset()), {*this}, reshape_back(this->shape()));
  return contiguous().view(shape);
}

Tensor Tensor::permute(const Shape& dims) const {
  BAM_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: {} dims given for {}", dims.size(), describe());
  Shape shape(dims.size()), strides(dims.size()), inverse(dims.size());
  std::vector<bool> used(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = normalize_dim(dims[i], dim(), "permute");
    BAM_CHECK(!used[d], "permute: dimension {} repeated in {}", d, shape_str(dims));
    used[d] = true;
    shape[i] = this->shape()[d];
    strides[i] = this->strides()[d];
    inverse[d] = static_cast<int64_t>(i);
  }
  return record("permute", make_view(*this, shape, strides, offset()), {*this},
                [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Shape dims(dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, dim(), "transpose")], dims[normalize_dim(d1, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::t() const {
  BAM_CHECK(dim() == 2, "t(): expects a 2-d tensor, got {}", describe());
  return transpose(0, 1);
}

Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
  int64_t d = normalize_dim(dim_, dim(), "slice");
  int64_t n = shape()[d];
  BAM_CHECK(step > 0, "slice: step must be positive, got {}", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = this->shape(), strides = this->strides();
  shape[d] = (end - start) / step + ((end - start) % step != 0);  // no overflow for a step near 2^63
  if (shape[d] > 1)  // one element or none: the stride is never stepped over
    BAM_CHECK(!__builtin_mul_overflow(strides[d], step, &strides[d]),
              "slice: step {} of dim {} of {} overflows its stride", step, d, describe());
  Shape input_shape = this->shape();
  return record("slice", make_view(*this, shape, strides, offset() + start * this->strides()[d]), {*this},
                [input_shape, d, start, end, step](const Tensor& g) {
                  Tensor full_grad = zeros(input_shape, {g.dtype(), g.device()});
                  copy_into(full_grad.slice(d, start, end, step), g);
                  return std::vector<Tensor>{full_grad};
                });
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  int64_t d = normalize_dim(dim_, dim(), "narrow");
  BAM_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d],
            "narrow: [{}, {}) is out of range for dim {} of size {} in {}", start, start + length, d, shape()[d],
            describe());
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
  int64_t d = normalize_dim(dim_, dim(), "select");
  int64_t n = shape()[d];
  BAM_CHECK(index >= -n && index < n, "select: index {} is out of range for dim {} of size {}", index, d, n);
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& requested) const {
  BAM_CHECK(requested.size() >= shape().size(), "expand: cannot expand {} to fewer dims {}", describe(),
            shape_str(requested));
  Shape shape = requested;
  size_t lead = requested.size() - this->shape().size();
  for (size_t d = 0; d < this->shape().size(); ++d)
    if (shape[lead + d] == -1) shape[lead + d] = this->shape()[d];
  for (int64_t s : shape)  // -1 keeps an existing size only; a new leading dim needs its own
    BAM_CHECK(s >= 0, "expand: {} to {}: a new leading dimension needs a size, not -1", describe(),
              shape_str(requested));
  Shape strides = broadcast_strides(*this, shape, "expand");
  Shape input_shape = this->shape();
  return record("expand", make_view(*this, shape, strides, offset()), {*this},
                [input_shape](const Tensor& g) { return std::vector<Tensor>{sum_to_shape(g, input_shape)}; });
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
  int64_t d = dim_ < 0 ? dim_ + dim() + 1 : dim_;
  BAM_CHECK(d >= 0 && d <= dim(), "unsqueeze: dimension {} is out of range for {}", dim_, describe());
  Shape shape = this->shape(), strides = this->strides();
  int64_t stride = d < dim() ? this->strides()[d] * this->shape()[d] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  return record("unsqueeze", make_view(*this, shape, strides, offset()), {*this}, reshape_back(this->shape()));
}

Tensor Tensor::squeeze(int64_t dim_) const {
  int64_t d = normalize_dim(dim_, dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape shape = this->shape(), strides = this->strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return record("squeeze", make_view(*this, shape, strides, offset()), {*this}, reshape_back(this->shape()));
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  int64_t s = normalize_dim(start_dim, dim(), "flatten"), e = normalize_dim(end_dim, dim(), "flatten");
  BAM_CHECK(s <= e, "flatten: start_dim {} is after end_dim {}", start_dim, end_dim);
  Shape shape(this->shape().begin(), this->shape().begin() + s);
  int64_t merged = 1;
  for (int64_t d = s; d <= e; ++d) merged *= this->shape()[d];
  shape.push_back(merged);
  shape.insert(shape.end(), this->shape().begin() + e + 1, this->shape().end());
  return reshape(shape);
}

}  // namespace bam
