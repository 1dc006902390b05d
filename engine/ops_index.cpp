// Joining, splitting and indexing ops: cat, stack, split, chunk, index_select, gather,
// scatter_add, topk.
#include <algorithm>

#include "engine/autograd.h"
#include "engine/cuda.h"
#ifdef BAM_WITH_CUDA
#include "engine/cuda_error_slots.h"
#endif
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/index.h"
#include "kernels/cuda/index.h"

namespace bam {
using namespace detail;

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  BAM_CHECK(!tensors.empty(), "cat: needs at least one tensor");
  const Tensor& first = tensors[0];
  int64_t d = normalize_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[d] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    BAM_CHECK(t.dim() == first.dim(), "cat: tensor {} is {} but tensor 0 is {}", i, t.describe(), first.describe());
    require_same_dtype("cat", first, t);
    BAM_CHECK(t.device() == first.device(), "cat: tensor {} is on {}, tensor 0 on {}", i, t.device().str(),
              first.device().str());
    for (int64_t k = 0; k < t.dim(); ++k)
      BAM_CHECK(k == d || t.size(k) == first.size(k), "cat: tensor {} {} does not match tensor 0 {} outside dim {}",
                i, shape_str(t.shape()), shape_str(first.shape()), d);
    shape[d] += t.size(d);
  }
  Tensor out = empty(shape, {first.dtype(), first.device()});
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  {
    NoGradGuard no_grad;
    for (const Tensor& t : tensors) {
      offsets.push_back(offset);
      copy_into(out.narrow(d, offset, t.size(d)), t);
      offset += t.size(d);
    }
  }
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) sizes.push_back(t.size(d));
  return record("cat", out, tensors, [d, offsets, sizes](const Tensor& g) {
    std::vector<Tensor> grads;
    for (size_t i = 0; i < sizes.size(); ++i) grads.push_back(g.narrow(d, offsets[i], sizes[i]));
    return grads;
  });
}

std::vector<double> read_scalars(const std::vector<Tensor>& values) {
  if (values.empty()) return {};
  NoGradGuard no_grad;
  std::vector<Tensor> parts;
  for (const Tensor& v : values) {
    BAM_CHECK(v.defined() && v.numel() == 1, "read_scalars: expected one-element tensors, got {}",
              v.defined() ? v.describe() : std::string("an undefined tensor"));
    parts.push_back(v.detach().reshape({1}).to(DType::f64));
  }
  return cat(parts, 0).to(Device::cpu()).to_vector<double>();
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  BAM_CHECK(!tensors.empty(), "stack: needs at least one tensor");
  int64_t d = dim < 0 ? dim + tensors[0].dim() + 1 : dim;
  std::vector<Tensor> expanded;
  for (size_t i = 0; i < tensors.size(); ++i) {
    BAM_CHECK(tensors[i].shape() == tensors[0].shape(), "stack: tensor {} is {} but tensor 0 is {}", i,
              tensors[i].describe(), tensors[0].describe());
    expanded.push_back(tensors[i].unsqueeze(d));
  }
  return cat(expanded, d);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  BAM_CHECK(split_size > 0, "split: split_size must be positive, got {}", split_size);
  int64_t d = normalize_dim(dim, x.dim(), "split");
  std::vector<Tensor> parts;
  for (int64_t start = 0; start < x.size(d); start += split_size)
    parts.push_back(x.narrow(d, start, std::min(split_size, x.size(d) - start)));
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  BAM_CHECK(chunks > 0, "chunk: the number of chunks must be positive, got {}", chunks);
  int64_t d = normalize_dim(dim, x.dim(), "chunk");
  return split(x, std::max<int64_t>(1, (x.size(d) + chunks - 1) / chunks), d);
}

namespace {

// [outer, dim, inner] sizes of a contiguous tensor around dim d.
void around(const Shape& shape, int64_t d, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t k = 0; k < d; ++k) *outer *= shape[k];
  for (size_t k = d + 1; k < shape.size(); ++k) *inner *= shape[k];
}

std::string index_out_of_range(const char* op, int64_t bad, int64_t d, int64_t size) {
  return fmt::format("{}: index {} is out of range for dim {} of size {}", op, bad, d, size);
}

void check_index_result(const cpu::IndexResult& r, const char* op, int64_t size, int64_t d) {
  if (!r.ok) fail("{}", index_out_of_range(op, r.bad_index, d, size));
}

#ifdef BAM_WITH_CUDA
// Runs a CUDA index kernel with an error slot: an out-of-range index is skipped by the kernel and
// thrown at the host's next wait for the device (engine/cuda_error_slots.h), so that indexing on
// the GPU costs no wait of its own.
template <typename Launch>
void run_cuda_index(const char* op, int64_t size, int64_t d, Launch launch) {
  int64_t* error = cuda::error_slot([op, size, d](int64_t bad) { return index_out_of_range(op, bad, d, size); });
  launch(error, cuda::current_stream());
}
#define BAM_CUDA_INDEX(op, size, d, ...) run_cuda_index(op, size, d, __VA_ARGS__)
#else
#define BAM_CUDA_INDEX(op, ...) fail("{}: this build has no CUDA backend", op)
#endif

// The type index sums are kept in: f32 for the 16-bit floats, the tensor's own otherwise.
DType accumulation_type(DType dtype) { return dtype == DType::bf16 || dtype == DType::f16 ? DType::f32 : dtype; }

void check_index_tensor(const char* op, const Tensor& index) {
  BAM_CHECK(index.dtype() == DType::i64, "{}: the index must be i64, got {}", op, index.describe());
}

// gather/scatter_add need index to match x outside dim.
void check_aligned(const char* op, const Tensor& x, const Tensor& index, int64_t d) {
  BAM_CHECK(index.dim() == x.dim(), "{}: index {} must have as many dims as {}", op, index.describe(), x.describe());
  for (int64_t k = 0; k < x.dim(); ++k)
    BAM_CHECK(k == d || index.size(k) == x.size(k), "{}: index {} must match {} outside dim {}", op,
              shape_str(index.shape()), shape_str(x.shape()), d);
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  same_device("index_select", {&x, &index});
  check_index_tensor("index_select", index);
  BAM_CHECK(index.dim() == 1, "index_select: the index must be 1-d, got {}", index.describe());
  int64_t d = normalize_dim(dim, x.dim(), "index_select");
  Tensor xc = contiguous_data(x), ic = contiguous_data(index);
  Shape shape = x.shape();
  shape[d] = index.size(0);
  Tensor out = empty(shape, {x.dtype(), x.device()});
  int64_t outer, inner;
  around(x.shape(), d, &outer, &inner);
  if (x.device().is_cuda()) {
    BAM_CUDA_INDEX("index_select", x.size(d), d, [&](int64_t* error, void* stream) {
      cuda_kernels::index_select(x.dtype(), xc.raw_data(), ic.data<int64_t>(), out.raw_data(), outer, x.size(d),
                                 index.size(0), inner, error, stream);
    });
  } else {
    dispatch_word(x.dtype(), [&](auto word) {  // any dtype: the rows are moved, not computed on
      using W = decltype(word);
      check_index_result(cpu::index_select<W>(static_cast<const W*>(xc.raw_data()), ic.data<int64_t>(),
                                              static_cast<W*>(out.raw_data()), outer, x.size(d), index.size(0), inner),
                         "index_select", x.size(d), d);
    });
  }
  Shape input_shape = x.shape();
  return record("index_select", out, {x}, [ic, d, input_shape, outer, inner](const Tensor& g) {
    // Repeated indices add several rows into one: the sums are kept in f32 for bf16/f16, rounded once.
    DType sum_type = accumulation_type(g.dtype());
    Tensor gc = contiguous_data(g.dtype() == sum_type ? g : g.to(sum_type));
    Tensor dx = zeros(input_shape, {sum_type, g.device()});
    if (g.device().is_cuda()) {
      BAM_CUDA_INDEX("index_select", input_shape[d], d, [&](int64_t* error, void* stream) {
        cuda_kernels::index_add(sum_type, dx.raw_data(), ic.data<int64_t>(), gc.raw_data(), outer, input_shape[d],
                                ic.size(0), inner, error, stream);
      });
    } else {
      dispatch_floating("index_select", sum_type, [&](auto tag) {
        using T = decltype(tag);
        cpu::index_add<T>(dx.data<T>(), ic.data<int64_t>(), gc.data<T>(), outer, input_shape[d], ic.size(0), inner);
      });
    }
    return std::vector<Tensor>{sum_type == g.dtype() ? dx : dx.to(g.dtype())};
  });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  same_device("gather", {&x, &index});
  check_index_tensor("gather", index);
  int64_t d = normalize_dim(dim, x.dim(), "gather");
  check_aligned("gather", x, index, d);
  Tensor xc = contiguous_data(x), ic = contiguous_data(index);
  Tensor out = empty(index.shape(), {x.dtype(), x.device()});
  int64_t outer, inner;
  around(x.shape(), d, &outer, &inner);
  if (x.device().is_cuda()) {
    BAM_CUDA_INDEX("gather", x.size(d), d, [&](int64_t* error, void* stream) {
      cuda_kernels::gather(x.dtype(), xc.raw_data(), ic.data<int64_t>(), out.raw_data(), outer, x.size(d),
                           index.size(d), inner, error, stream);
    });
  } else {
    dispatch_word(x.dtype(), [&](auto word) {  // any dtype: elements are moved, not computed on
      using W = decltype(word);
      check_index_result(cpu::gather<W>(static_cast<const W*>(xc.raw_data()), ic.data<int64_t>(),
                                        static_cast<W*>(out.raw_data()), outer, x.size(d), index.size(d), inner),
                         "gather", x.size(d), d);
    });
  }
  Shape input_shape = x.shape();
  return record("gather", out, {x}, [ic, d, input_shape](const Tensor& g) {
    return std::vector<Tensor>{scatter_add(zeros(input_shape, {g.dtype(), g.device()}), d, ic, g)};
  });
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  same_device("scatter_add", {&x, &index, &src});
  check_index_tensor("scatter_add", index);
  require_same_dtype("scatter_add", x, src);
  int64_t d = normalize_dim(dim, x.dim(), "scatter_add");
  check_aligned("scatter_add", x, index, d);
  BAM_CHECK(src.shape() == index.shape(), "scatter_add: src {} must have the index's shape {}", src.describe(),
            shape_str(index.shape()));
  // The sums are kept in f32 for bf16/f16 and rounded once: adding many small values one by one in
  // an 8-bit mantissa loses them (1 + 2^-9 rounds back to 1), and on the GPU, where the adds are
  // atomic, in an order that changes from run to run.
  DType sum_type = accumulation_type(x.dtype());
  Tensor out;
  {
    NoGradGuard no_grad;
    out = x.dtype() == sum_type ? x.clone() : x.to(sum_type);
  }
  Tensor ic = contiguous_data(index), sc = contiguous_data(src.dtype() == sum_type ? src : src.detach().to(sum_type));
  int64_t outer, inner;
  around(x.shape(), d, &outer, &inner);
  if (x.device().is_cuda()) {
    BAM_CUDA_INDEX("scatter_add", x.size(d), d, [&](int64_t* error, void* stream) {
      cuda_kernels::scatter_add(sum_type, out.raw_data(), ic.data<int64_t>(), sc.raw_data(), outer, x.size(d),
                                index.size(d), inner, error, stream);
    });
  } else {
    dispatch_floating("scatter_add", sum_type, [&](auto tag) {
      using T = decltype(tag);
      check_index_result(cpu::scatter_add<T>(out.data<T>(), ic.data<int64_t>(), sc.data<T>(), outer, x.size(d),
                                             index.size(d), inner),
                         "scatter_add", x.size(d), d);
    });
  }
  if (sum_type != x.dtype()) {
    NoGradGuard no_grad;
    out = out.to(x.dtype());
  }
  return record("scatter_add", out, {x, src}, [ic, d](const Tensor& g) {
    return std::vector<Tensor>{g, gather(g, d, ic)};
  });
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  int64_t d = normalize_dim(dim, x.dim(), "topk");
  BAM_CHECK(k >= 0 && k <= x.size(d), "topk: k = {} is out of range for dim {} of size {}", k, d, x.size(d));
  Tensor xl = move_dim_last(x, d);
  const int64_t cols = xl.size(-1), rows = xl.numel() / std::max<int64_t>(cols, 1);
  Shape shape = xl.shape();
  shape.back() = k;
  Tensor values = empty(shape, {x.dtype(), x.device()}), indices = empty(shape, {DType::i64, x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH("topk", cuda_kernels::topk(x.dtype(), xl.raw_data(), values.raw_data(),
                                               indices.data<int64_t>(), rows, cols, k, largest,
                                               cuda::current_stream()));
  } else {
    dispatch_floating("topk", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::topk<T>(xl.data<T>(), values.data<T>(), indices.data<int64_t>(), rows, cols, k, largest);
    });
  }
  Tensor index_out = contiguous_data(restore_dim(indices, d));
  Tensor value_out = contiguous_data(restore_dim(values, d));
  Shape input_shape = x.shape();
  value_out = record("topk", value_out, {x}, [index_out, d, input_shape](const Tensor& g) {
    return std::vector<Tensor>{scatter_add(zeros(input_shape, {g.dtype(), g.device()}), d, index_out, g)};
  });
  return {value_out, index_out};
}

}  // namespace bam
