// Reductions: sum, mean, var, max/min (values and indices), and sum_to_shape for broadcasting.
#include <algorithm>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cuda/reduce.h"

namespace bam {
using namespace detail;

namespace {

// x laid out so that the reduced dims form the middle axis of [outer, reduce, inner]; returns the
// contiguous data to reduce and the three sizes.
struct ReduceLayout {
  Tensor data;
  int64_t outer = 1, reduce = 1, inner = 1;
};

ReduceLayout reduce_layout(const Tensor& x, const Shape& dims) {
  ReduceLayout layout;
  const Shape& shape = x.shape();
  bool adjacent = !dims.empty() && dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
  if (adjacent) {
    layout.data = contiguous_data(x);
    for (int64_t d = 0; d < dims.front(); ++d) layout.outer *= shape[d];
    for (int64_t d : dims) layout.reduce *= shape[d];
    for (int64_t d = dims.back() + 1; d < x.dim(); ++d) layout.inner *= shape[d];
    return layout;
  }
  // Move the kept dims first, the reduced dims last.
  Shape order;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) {
      order.push_back(d);
      layout.outer *= shape[d];
    }
  for (int64_t d : dims) {
    order.push_back(d);
    layout.reduce *= shape[d];
  }
  NoGradGuard no_grad;
  layout.data = x.permute(order).contiguous();
  return layout;
}

Tensor reduce_forward(cpu::ReduceOp op, const char* name, const Tensor& x, const Shape& dims, bool keepdim) {
  ReduceLayout layout = reduce_layout(x, dims);
  Tensor out = empty(reduced_shape(x.shape(), dims, keepdim), {x.dtype(), x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH(name, [&] {
      size_t bytes = cuda_kernels::reduce_scratch_bytes(layout.outer, layout.reduce, layout.inner);
      Tensor scratch = bytes ? empty({static_cast<int64_t>(bytes)}, {DType::u8, x.device()}) : Tensor();
      cuda_kernels::reduce(op, x.dtype(), layout.data.raw_data(), out.raw_data(), layout.outer, layout.reduce,
                           layout.inner, bytes ? scratch.raw_data() : nullptr, cuda::current_stream());
    }());
    return out;
  }
  dispatch_floating(name, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::reduce<T>(op, layout.data.data<T>(), out.data<T>(), layout.outer, layout.reduce, layout.inner);
  });
  return out;
}

Tensor arg_reduce_forward(bool is_max, const char* name, const Tensor& x, int64_t dim, bool keepdim) {
  BAM_CHECK(x.numel() > 0 && x.size(dim) > 0, "{}: cannot reduce an empty dimension of {}", name, x.describe());
  Shape dims{normalize_dim(dim, x.dim(), name)};
  ReduceLayout layout = reduce_layout(x, dims);
  Tensor out = empty(reduced_shape(x.shape(), dims, keepdim), {DType::i64, x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH(name, cuda_kernels::arg_reduce(is_max, x.dtype(), layout.data.raw_data(), out.data<int64_t>(),
                                                   layout.outer, layout.reduce, layout.inner,
                                                   cuda::current_stream()));
    return out;
  }
  dispatch_floating(name, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::arg_reduce<T>(is_max, layout.data.data<T>(), out.data<int64_t>(), layout.outer, layout.reduce,
                       layout.inner);
  });
  return out;
}

// max/min along one dim: values, with the gradient routed to the first extreme element.
Tensor extreme_along(bool is_max, const char* name, const Tensor& x, int64_t dim, bool keepdim) {
  int64_t d = normalize_dim(dim, x.dim(), name);
  Tensor index = arg_reduce_forward(is_max, name, x, d, true);
  Tensor values;
  {
    NoGradGuard no_grad;
    values = gather(x.detach(), d, index);
    if (!keepdim) values = values.squeeze(d);
    values = contiguous_data(values);
  }
  Shape input_shape = x.shape();
  return record(name, values, {x}, [index, input_shape, d, keepdim](const Tensor& g) {
    Tensor gk = keepdim ? g : g.unsqueeze(d);
    return std::vector<Tensor>{scatter_add(zeros(input_shape, {g.dtype(), g.device()}), d, index, gk)};
  });
}

}  // namespace

Tensor sum(const Tensor& x, const Shape& dims_in, bool keepdim) {
  Shape dims = reduction_dims(dims_in, x.dim(), "sum");
  Tensor out = reduce_forward(cpu::ReduceOp::sum, "sum", x, dims, keepdim);
  Shape input_shape = x.shape(), kept = reduced_shape(x.shape(), dims, true);
  return record("sum", out, {x}, [input_shape, kept](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(kept).expand(input_shape)};
  });
}

Tensor sum(const Tensor& x) { return sum(x, {}, false); }

Tensor mean(const Tensor& x, const Shape& dims_in, bool keepdim) {
  Shape dims = reduction_dims(dims_in, x.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[d];
  BAM_CHECK(count > 0, "mean: reducing an empty set of elements of {}", x.describe());
  return div(sum(x, dims, keepdim), static_cast<double>(count));
}

Tensor mean(const Tensor& x) { return mean(x, {}, false); }

Tensor var(const Tensor& x, const Shape& dims_in, bool unbiased, bool keepdim) {
  Shape dims = reduction_dims(dims_in, x.dim(), "var");
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[d];
  BAM_CHECK(count > (unbiased ? 1 : 0), "var: {} elements are too few for {} variance", count,
            unbiased ? "an unbiased" : "a");
  Tensor centred = sub(x, mean(x, dims, true));
  return div(sum(square(centred), dims, keepdim), static_cast<double>(unbiased ? count - 1 : count));
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) { return extreme_along(true, "max", x, dim, keepdim); }
Tensor min(const Tensor& x, int64_t dim, bool keepdim) { return extreme_along(false, "min", x, dim, keepdim); }
Tensor max(const Tensor& x) { return max(x.reshape({-1}), 0, false); }
Tensor min(const Tensor& x) { return min(x.reshape({-1}), 0, false); }
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return arg_reduce_forward(true, "argmax", x, dim, keepdim);
}
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) {
  return arg_reduce_forward(false, "argmin", x, dim, keepdim);
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  BAM_CHECK(lead >= 0, "sum_to_shape: cannot reduce {} to {}", x.describe(), shape_str(shape));
  Shape dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && x.shape()[d] != 1) {
      dims.push_back(d);
    } else {
      BAM_CHECK(shape[d - lead] == x.shape()[d], "sum_to_shape: cannot reduce {} to {}", x.describe(),
                shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace bam
