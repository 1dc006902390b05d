// Validation, broadcasting and layout helpers used by the op implementations.
#include "engine/op_support.h"

#include <algorithm>
#include <numeric>

#include "engine/autograd.h"

namespace bam::detail {

Device same_device(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    BAM_CHECK(t->device() == first->device(), "{}: tensors on different devices ({} and {}); move one with .to()",
              op, first->describe(), t->describe());
  }
  return first ? first->device() : Device::cpu();
}

void require_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  BAM_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ ({} and {}); convert one with .to()", op, a.describe(),
            b.describe());
}

void require_floating(const char* op, const Tensor& t) {
  BAM_CHECK(is_floating(t.dtype()), "{}: expects a floating-point tensor, got {}", op, t.describe());
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    BAM_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} cannot be broadcast together", op, shape_str(a),
              shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor contiguous_data(const Tensor& x) {
  if (x.is_contiguous()) return x;
  NoGradGuard no_grad;
  return x.contiguous();
}

Shape reduction_dims(const Shape& dims, int64_t ndim, const char* op) {
  Shape out;
  if (dims.empty()) {
    out.resize(ndim);
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  if (ndim == 0) {  // as torch: dim 0 or -1 of a 0-d tensor is its one element, reduced to itself
    for (int64_t d : dims) BAM_CHECK(d == 0 || d == -1, "{}: dimension {} is out of range for a 0-d tensor", op, d);
    return out;
  }
  for (int64_t d : dims) out.push_back(normalize_dim(d, ndim, op));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Shape reduced_shape(const Shape& shape, const Shape& dims, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    bool reduced = std::find(dims.begin(), dims.end(), static_cast<int64_t>(d)) != dims.end();
    if (!reduced) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

Tensor move_dim_last(const Tensor& x, int64_t dim) {
  NoGradGuard no_grad;
  int64_t d = normalize_dim(dim, x.dim(), "move_dim_last");
  if (d == x.dim() - 1) return contiguous_data(x);
  return x.transpose(d, -1).contiguous();
}

Tensor restore_dim(const Tensor& y_last, int64_t dim) {
  NoGradGuard no_grad;
  int64_t d = normalize_dim(dim, y_last.dim(), "restore_dim");
  if (d == y_last.dim() - 1) return y_last;
  return y_last.transpose(d, -1);
}

}  // namespace bam::detail
