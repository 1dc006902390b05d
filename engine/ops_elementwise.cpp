// Elementwise ops: broadcasting binary arithmetic, the mixed-dtype residual add, unary maps, scalar
// forms, comparisons, where.
#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/elementwise.h"

namespace bam {
using namespace detail;
using cpu::BinaryOp;
using cpu::CompareOp;
using cpu::UnaryArgs;
using cpu::UnaryOp;

namespace {

// The forward of a broadcasting binary op, without autograd.
Tensor binary_forward(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  Device device = same_device(name, {&a, &b});
  require_same_dtype(name, a, b);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, {a.dtype(), device});
  Shape as = broadcast_strides(a, shape, name), bs = broadcast_strides(b, shape, name);
  if (device.is_cuda()) {
    BAM_CUDA_BRANCH(name, cuda_kernels::binary_forward(op, a.dtype(), a.raw_data(), as.data(), b.raw_data(),
                                                       bs.data(), out.raw_data(), shape.data(),
                                                       static_cast<int>(shape.size()), cuda::current_stream()));
    return out;
  }
  dispatch_floating(name, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::binary_forward<T>(op, a.data<T>(), as.data(), b.data<T>(), bs.data(), out.data<T>(), shape.data(),
                           static_cast<int>(shape.size()));
  });
  return out;
}

Tensor zeros_scalar(const Tensor& like) { return zeros({}, {like.dtype(), like.device()}); }

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::add, "add", a, b);
  Shape sa = a.shape(), sb = b.shape();
  return record("add", out, {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(g, sb)};
  });
}

Tensor residual_add(const Tensor& stream, const Tensor& branch) {
  if (stream.dtype() == branch.dtype()) return add(stream, branch);
  Device device = same_device("residual_add", {&stream, &branch});
  require_floating("residual_add", stream);
  require_floating("residual_add", branch);
  BAM_CHECK(stream.shape() == branch.shape(), "residual_add: the branch {} must have the stream's shape {}",
            branch.describe(), stream.describe());
  // A narrower branch converts exactly; a wider one, or bf16 against f16 (same width, neither
  // holding the other), would be rounded twice on one device and once on the other.
  BAM_CHECK(dtype_size(branch.dtype()) <= dtype_size(stream.dtype()),
            "residual_add: the branch {} is wider than the stream {}", branch.describe(), stream.describe());
  BAM_CHECK(dtype_size(branch.dtype()) < dtype_size(stream.dtype()),
            "residual_add: the branch {} is not narrower than the stream {}", branch.describe(), stream.describe());
  Tensor sc = contiguous_data(stream), bc = contiguous_data(branch);
  Tensor out = empty(stream.shape(), {stream.dtype(), device});
  if (device.is_cuda()) {
    BAM_CUDA_BRANCH("residual_add", cuda_kernels::add_mixed(stream.dtype(), sc.raw_data(), branch.dtype(),
                                                            bc.raw_data(), out.raw_data(), out.numel(),
                                                            cuda::current_stream()));
  } else {
    // The CPU specification: the branch converted to the stream's dtype, then added.
    Tensor converted = empty(branch.shape(), {stream.dtype(), device});
    cpu::convert(bc.raw_data(), branch.dtype(), converted.raw_data(), stream.dtype(), branch.numel());
    const int64_t n = out.numel();
    dispatch_floating("residual_add", stream.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const int64_t unit = 1;
      cpu::binary_forward<T>(BinaryOp::add, sc.data<T>(), &unit, converted.data<T>(), &unit, out.data<T>(), &n, 1);
    });
  }
  DType branch_dtype = branch.dtype();
  return record("residual_add", out, {stream, branch}, [branch_dtype](const Tensor& g) {
    return std::vector<Tensor>{g, g.to(branch_dtype)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::sub, "sub", a, b);
  Shape sa = a.shape(), sb = b.shape();
  return record("sub", out, {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(neg(g), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::mul, "mul", a, b);
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  Tensor ad = need_b ? a.detach() : Tensor(), bd = need_a ? b.detach() : Tensor();
  Shape sa = a.shape(), sb = b.shape();
  return record("mul", out, {a, b}, [ad, bd, sa, sb, need_a, need_b](const Tensor& g) {
    return std::vector<Tensor>{need_a ? sum_to_shape(mul(g, bd), sa) : Tensor(),
                               need_b ? sum_to_shape(mul(g, ad), sb) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::div, "div", a, b);
  bool need_b = b.requires_grad();
  Tensor bd = b.detach(), od = need_b ? out.detach() : Tensor();
  Shape sa = a.shape(), sb = b.shape();
  return record("div", out, {a, b}, [bd, od, sa, sb, need_b](const Tensor& g) {
    Tensor ga = div(g, bd);
    // d(a/b)/db = -a/b^2 = -(a/b)/b
    return std::vector<Tensor>{sum_to_shape(ga, sa), need_b ? sum_to_shape(neg(mul(ga, od)), sb) : Tensor()};
  });
}

namespace {
Tensor extremum(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(op, name, a, b);
  Tensor ad = a.detach(), bd = b.detach();
  Shape sa = a.shape(), sb = b.shape();
  bool is_max = op == BinaryOp::maximum;
  return record(name, out, {a, b}, [ad, bd, sa, sb, is_max](const Tensor& g) {
    Tensor a_wins = is_max ? ge(ad, bd) : le(ad, bd);
    Tensor zero = zeros_scalar(g);
    return std::vector<Tensor>{sum_to_shape(where(a_wins, g, zero), sa), sum_to_shape(where(a_wins, zero, g), sb)};
  });
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum(BinaryOp::maximum, "maximum", a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum(BinaryOp::minimum, "minimum", a, b); }

// ---- unary ----------------------------------------------------------------------------------------

namespace {

// Whether the derivative is computed from the output (then only y is saved) or from x.
bool derivative_uses_output(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp:
    case UnaryOp::sqrt:
    case UnaryOp::rsqrt:
    case UnaryOp::tanh:
    case UnaryOp::sigmoid:
      return true;
    default:
      return false;
  }
}

bool derivative_is_constant(UnaryOp op) {
  return op == UnaryOp::neg || op == UnaryOp::add_scalar || op == UnaryOp::mul_scalar || op == UnaryOp::rsub_scalar;
}

}  // namespace

// dx = g * f'(x) through the unary backward kernels; x or y (the forward's output) may be undefined
// when the derivative does not read it.
Tensor detail::unary_grad(UnaryOp op, const char* name, const Tensor& x, const Tensor& y, const Tensor& g,
                          UnaryArgs args) {
  // The kernels read every operand as one dense run of elements.
  Tensor gc = contiguous_data(g);
  Tensor saved_x = x.defined() ? contiguous_data(x) : Tensor(), saved_y = y.defined() ? contiguous_data(y) : Tensor();
  Tensor dx = empty(gc.shape(), {gc.dtype(), gc.device()});
  if (gc.device().is_cuda()) {
    BAM_CUDA_BRANCH(name, cuda_kernels::unary_backward(op, gc.dtype(), saved_x.defined() ? saved_x.raw_data() : nullptr,
                                                       saved_y.defined() ? saved_y.raw_data() : nullptr,
                                                       gc.raw_data(), dx.raw_data(), gc.numel(), args,
                                                       cuda::current_stream()));
    return dx;
  }
  dispatch_floating(name, gc.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::unary_backward<T>(op, saved_x.defined() ? saved_x.data<T>() : nullptr,
                           saved_y.defined() ? saved_y.data<T>() : nullptr, gc.data<T>(), dx.data<T>(), gc.numel(),
                           args);
  });
  return dx;
}

namespace {

Tensor unary(UnaryOp op, const char* name, const Tensor& x, UnaryArgs args = {}) {
  require_floating(name, x);
  Tensor xc = contiguous_data(x);
  Tensor out = empty(x.shape(), {x.dtype(), x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH(name, cuda_kernels::unary_forward(op, x.dtype(), xc.raw_data(), out.raw_data(), x.numel(), args,
                                                      cuda::current_stream()));
  } else {
    dispatch_floating(name, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::unary_forward<T>(op, xc.data<T>(), out.data<T>(), x.numel(), args);
    });
  }
  if (!any_requires_grad({&x})) return out;
  Tensor saved_x = derivative_uses_output(op) || derivative_is_constant(op) ? Tensor() : xc.detach();
  Tensor saved_y = derivative_uses_output(op) ? out.detach() : Tensor();
  return record(name, out, {x}, [op, args, saved_x, saved_y, name](const Tensor& g) {
    return std::vector<Tensor>{unary_grad(op, name, saved_x, saved_y, g, args)};
  });
}

}  // namespace

Tensor neg(const Tensor& x) { return unary(UnaryOp::neg, "neg", x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::exp, "exp", x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::log, "log", x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::sqrt, "sqrt", x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::rsqrt, "rsqrt", x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::abs, "abs", x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::square, "square", x); }
Tensor pow(const Tensor& x, double exponent) { return unary(UnaryOp::pow, "pow", x, {exponent, 0}); }
Tensor clamp(const Tensor& x, double min_value, double max_value) {
  BAM_CHECK(min_value <= max_value, "clamp: min {} is greater than max {}", min_value, max_value);
  return unary(UnaryOp::clamp, "clamp", x, {min_value, max_value});
}
Tensor clamp_min(const Tensor& x, double min_value) { return clamp(x, min_value, INFINITY); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::tanh, "tanh", x); }
Tensor erf(const Tensor& x) { return unary(UnaryOp::erf, "erf", x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::sigmoid, "sigmoid", x); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::relu, "relu", x); }
Tensor gelu(const Tensor& x, GeluForm form) {
  return form == GeluForm::erf ? unary(UnaryOp::gelu_erf, "gelu", x) : unary(UnaryOp::gelu_tanh, "gelu_tanh", x);
}

Tensor add(const Tensor& a, double b) { return unary(UnaryOp::add_scalar, "add_scalar", a, {b, 0}); }
Tensor sub(const Tensor& a, double b) { return unary(UnaryOp::add_scalar, "sub_scalar", a, {-b, 0}); }
Tensor sub(double a, const Tensor& b) { return unary(UnaryOp::rsub_scalar, "rsub_scalar", b, {a, 0}); }
Tensor mul(const Tensor& a, double b) { return unary(UnaryOp::mul_scalar, "mul_scalar", a, {b, 0}); }
Tensor div(const Tensor& a, double b) { return unary(UnaryOp::mul_scalar, "div_scalar", a, {1.0 / b, 0}); }
Tensor div(double a, const Tensor& b) { return unary(UnaryOp::rdiv_scalar, "rdiv_scalar", b, {a, 0}); }

// ---- comparisons and selection ----------------------------------------------------------------

namespace {

template <typename Fn>
void dispatch_comparable(const char* op, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    case DType::i32: fn(int32_t{}); return;
    case DType::i64: fn(int64_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
    case DType::boolean: fn(bool{}); return;
    default: fail("{}: dtype {} is not supported on the CPU", op, dtype_name(dtype));
  }
}

Tensor compare(CompareOp op, const char* name, const Tensor& a, const Tensor& b) {
  Device device = same_device(name, {&a, &b});
  require_same_dtype(name, a, b);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = empty(shape, {DType::boolean, device});
  Shape as = broadcast_strides(a, shape, name), bs = broadcast_strides(b, shape, name);
  if (device.is_cuda()) {
    BAM_CUDA_BRANCH(name, cuda_kernels::compare(op, a.dtype(), a.raw_data(), as.data(), b.raw_data(), bs.data(),
                                                out.data<bool>(), shape.data(), static_cast<int>(shape.size()),
                                                cuda::current_stream()));
    return out;
  }
  dispatch_comparable(name, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::compare<T>(op, a.data<T>(), as.data(), b.data<T>(), bs.data(), out.data<bool>(), shape.data(),
                    static_cast<int>(shape.size()));
  });
  return out;
}

Tensor scalar_like(const Tensor& t, double value) { return full({}, value, {t.dtype(), t.device()}); }

}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare(CompareOp::eq, "eq", a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(CompareOp::ne, "ne", a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(CompareOp::lt, "lt", a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(CompareOp::le, "le", a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(CompareOp::gt, "gt", a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(CompareOp::ge, "ge", a, b); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_like(a, b)); }
Tensor ne(const Tensor& a, double b) { return ne(a, scalar_like(a, b)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_like(a, b)); }
Tensor le(const Tensor& a, double b) { return le(a, scalar_like(a, b)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_like(a, b)); }
Tensor ge(const Tensor& a, double b) { return ge(a, scalar_like(a, b)); }

Tensor logical_not(const Tensor& mask) {
  BAM_CHECK(mask.dtype() == DType::boolean, "logical_not: expects a bool tensor, got {}", mask.describe());
  return eq(mask, scalar_like(mask, 0.0));
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Device device = same_device("where", {&cond, &a, &b});
  BAM_CHECK(cond.dtype() == DType::boolean, "where: the condition must be bool, got {}", cond.describe());
  require_same_dtype("where", a, b);
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty(shape, {a.dtype(), device});
  Shape cs = broadcast_strides(cond, shape, "where"), as = broadcast_strides(a, shape, "where"),
        bs = broadcast_strides(b, shape, "where");
  if (device.is_cuda()) {
    BAM_CUDA_BRANCH("where", cuda_kernels::where(cond.data<bool>(), cs.data(), a.dtype(), a.raw_data(), as.data(),
                                                 b.raw_data(), bs.data(), out.raw_data(), shape.data(),
                                                 static_cast<int>(shape.size()), cuda::current_stream()));
  } else {
    dispatch_comparable("where", a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::where<T>(cond.data<bool>(), cs.data(), a.data<T>(), as.data(), b.data<T>(), bs.data(), out.data<T>(),
                    shape.data(), static_cast<int>(shape.size()));
    });
  }
  if (!any_requires_grad({&a, &b})) return out;
  Tensor cd = cond.detach();
  Shape sa = a.shape(), sb = b.shape();
  return record("where", out, {a, b}, [cd, sa, sb](const Tensor& g) {
    Tensor zero = zeros_scalar(g);
    return std::vector<Tensor>{sum_to_shape(where(cd, g, zero), sa), sum_to_shape(where(cd, zero, g), sb)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  BAM_CHECK(mask.dtype() == DType::boolean, "masked_fill: the mask must be bool, got {}", mask.describe());
  broadcast_strides(mask, x.shape(), "masked_fill");  // the mask must broadcast to x, not the reverse
  return where(mask, scalar_like(x, value), x);
}

}  // namespace bam
