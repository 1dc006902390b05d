// matmul (plain, batched, broadcast) and linear, on the GEMM kernels. Transposed views become
// transposed GEMM operands instead of copies, so backward passes (which multiply by transposes)
// never materialise a transpose.
#include <algorithm>
#include <optional>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"

namespace bam {
using namespace detail;

namespace {

// t as a matrix with t's last dim as its columns: [rows, t.size(-1)], rows being the product of the
// other dims. Spelled out rather than reshape({-1, cols}): with an empty last dim (K = 0) the
// element count says nothing about the rows.
Tensor as_rows(const Tensor& t) {
  return t.reshape({shape_numel(Shape(t.shape().begin(), t.shape().end() - 1)), t.size(-1)});
}

// How a [rows, cols] matrix view maps onto a GEMM operand.
struct MatrixOperand {
  bool usable = false;      // false: the strides fit neither layout; copy first
  bool transposed = false;  // stored as [cols, rows]
  int64_t ld = 1;           // leading dimension of the stored matrix
};

MatrixOperand operand_of(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  MatrixOperand m;
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= std::max<int64_t>(cols, 1))) {
    m.usable = true;
    m.ld = rows == 1 ? std::max<int64_t>(cols, 1) : row_stride;
  } else if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= std::max<int64_t>(rows, 1))) {
    m.usable = true;
    m.transposed = true;
    m.ld = cols == 1 ? std::max<int64_t>(rows, 1) : col_stride;
  }
  return m;
}

// The matrix operand of the last two dims of t (copying t if its strides fit no GEMM layout).
MatrixOperand matrix_operand(Tensor& t) {
  int64_t n = t.dim();
  MatrixOperand m = operand_of(t.size(n - 2), t.size(n - 1), t.stride(n - 2), t.stride(n - 1));
  if (!m.usable) {
    NoGradGuard no_grad;
    t = t.contiguous();
    m = operand_of(t.size(n - 2), t.size(n - 1), t.stride(n - 2), t.stride(n - 1));
  }
  return m;
}

// Under bf16 autocast an f32 GEMM on the CPU rounds its operands to bf16 and accumulates in f32
// (gemm_f32_bf16: AMX tiles or AVX-512 BF16 where the CPU has them). That is the CPU's form of autocast: the
// tensors stay f32 (the CPU kernels are f32/f64), only the products see bf16 operands, as the
// GPU's bf16 GEMMs do.
bool cpu_gemm_in_bf16() { return autocast_dtype() == DType::bf16; }

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
          T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_gemm_in_bf16()) {
      cpu::gemm_f32_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    } else {
      cpu::gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    }
  } else {
    cpu::gemm_f64(ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
  }
}

template <typename T>
void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, int64_t sa,
                  const T* B, int64_t ldb, int64_t sb, T* C, int64_t ldc, int64_t sc) {
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_gemm_in_bf16()) {
      cpu::gemm_batched_f32_bf16(ta, tb, batch, M, N, K, 1.0f, A, lda, sa, B, ldb, sb, 0.0f, C, ldc, sc);
    } else {
      cpu::gemm_batched_f32(ta, tb, batch, M, N, K, 1.0f, A, lda, sa, B, ldb, sb, 0.0f, C, ldc, sc);
    }
  } else {
    cpu::gemm_batched_f64(ta, tb, batch, M, N, K, 1.0, A, lda, sa, B, ldb, sb, 0.0, C, ldc, sc);
  }
}

// The autocast state a CPU product was recorded under, restored for its backward: backward runs
// after the guard is gone (or under another one), and its GEMMs must round exactly as the
// forward's did. On the GPU the saved 16-bit tensors carry that by themselves: nothing to restore.
std::optional<DType> cpu_backward_autocast(const Device& device) {
  if (device.is_cuda()) return std::nullopt;
  return autocast_dtype();
}

struct ScopedAutocast {
  explicit ScopedAutocast(std::optional<DType> dtype) {
    if (dtype) guard.emplace(*dtype);
  }
  std::optional<AutocastGuard> guard;
};

// a [..., M, K] @ b [K, N]: the leading dims of a fold into M when its layout allows.
Tensor matmul_shared_rhs(Tensor a, Tensor b) {
  const int64_t K = a.size(-1), N = b.size(-1);
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(N);
  {
    NoGradGuard no_grad;
    a = a.dim() == 2 ? a : as_rows(a);
  }
  const int64_t rows = a.size(0);
  MatrixOperand ma = matrix_operand(a), mb = matrix_operand(b);
  Tensor out = empty({rows, N}, {a.dtype(), a.device()});
  if (a.device().is_cuda()) {
    BAM_CUDA_BRANCH("matmul",
                    cuda_kernels::gemm(a.dtype(), ma.transposed, mb.transposed, 1, rows, N, K, a.raw_data(), ma.ld, 0,
                                       b.raw_data(), mb.ld, 0, 0.0f, out.raw_data(), N, 0, cuda::current_stream()));
    return out.view(out_shape);
  }
  dispatch_floating("matmul", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gemm<T>(ma.transposed, mb.transposed, rows, N, K, a.data<T>(), ma.ld, b.data<T>(), mb.ld, T(0), out.data<T>(), N);
  });
  return out.view(out_shape);
}

// Batched: the batch dims broadcast, then flatten to one batch dim with a single stride.
Tensor matmul_batched(const Tensor& a_in, const Tensor& b_in) {
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  Shape batch_a(a_in.shape().begin(), a_in.shape().end() - 2), batch_b(b_in.shape().begin(), b_in.shape().end() - 2);
  Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  int64_t count = shape_numel(batch);
  Shape shape_a = batch, shape_b = batch, out_shape = batch;
  shape_a.insert(shape_a.end(), {M, K});
  shape_b.insert(shape_b.end(), {K, N});
  out_shape.insert(out_shape.end(), {M, N});
  Tensor a, b;
  {
    NoGradGuard no_grad;
    a = a_in.expand(shape_a).reshape({count, M, K});
    b = b_in.expand(shape_b).reshape({count, K, N});
  }
  MatrixOperand ma = matrix_operand(a), mb = matrix_operand(b);
  Tensor out = empty({count, M, N}, {a.dtype(), a.device()});
  if (a.device().is_cuda()) {
    BAM_CUDA_BRANCH("matmul", cuda_kernels::gemm(a.dtype(), ma.transposed, mb.transposed, count, M, N, K, a.raw_data(),
                                                 ma.ld, a.stride(0), b.raw_data(), mb.ld, b.stride(0), 0.0f,
                                                 out.raw_data(), N, M * N, cuda::current_stream()));
    return out.view(out_shape);
  }
  dispatch_floating("matmul", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gemm_batched<T>(ma.transposed, mb.transposed, count, M, N, K, a.data<T>(), ma.ld, a.stride(0), b.data<T>(), mb.ld,
                    b.stride(0), out.data<T>(), N, M * N);
  });
  return out.view(out_shape);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  same_device("matmul", {&a, &b});
  require_same_dtype("matmul", a, b);
  BAM_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: operands must have at least 1 dim, got {} and {}", a.describe(),
            b.describe());
  if (a.dim() == 1 && b.dim() == 1) return matmul(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
  if (a.dim() == 1) return matmul(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul(a, b.unsqueeze(1)).squeeze(-1);
  BAM_CHECK(a.size(-1) == b.size(-2), "matmul: inner dimensions differ: {} @ {}", a.describe(), b.describe());

  Tensor out = b.dim() == 2 ? matmul_shared_rhs(a, b) : matmul_batched(a, b);
  Tensor ad = a.detach(), bd = b.detach();
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  const std::optional<DType> autocast = cpu_backward_autocast(a.device());
  return record("matmul", out, {a, b}, [ad, bd, need_a, need_b, autocast](const Tensor& g) {
    ScopedAutocast scope(autocast);
    Tensor da, db;
    if (need_a) da = sum_to_shape(matmul(g, bd.transpose(-1, -2)), ad.shape());
    if (need_b) {
      if (bd.dim() == 2) {
        // Shared weight: one GEMM over all rows instead of a batched product then a sum.
        db = matmul(as_rows(ad).t(), as_rows(g));
      } else {
        db = sum_to_shape(matmul(ad.transpose(-1, -2), g), bd.shape());
      }
    }
    return std::vector<Tensor>{da, db};
  });
}

namespace {

// The gradients of out = x weight^T + bias for the incoming g: dx, dw, db (undefined where not
// needed). dw and db come from one pass over g where a kernel offers it: cuBLASLt's bias-gradient
// epilogue on CUDA (when it has an algorithm for the layout), and on the CPU under bf16 autocast
// the GEMM that sums g's columns while it packs g (the bits of sum(g, {0}); not for one output,
// whose sum(g, {0}) adds in another order). With gelu_of_x the layer's input was GELU(xd)
// (gelu_linear): the CPU's fused GEMM applies it while it packs xd; the other paths compute it
// first. dx is then the gradient with respect to GELU(xd).
std::vector<Tensor> linear_backward(const Tensor& g, const Tensor& xd, const Tensor& wd, bool need_x, bool need_w,
                                    bool need_b, bool gelu_of_x = false) {
  Tensor g2 = as_rows(g);
  Tensor dx, dw, db;
  if (need_x) dx = matmul(g2, wd).view(xd.shape());
  Tensor input;  // the layer's input, GELU(xd) computed once if a path needs it
  const auto layer_input = [&]() -> const Tensor& {
    if (!input.defined()) {
      NoGradGuard no_grad;
      input = gelu_of_x ? gelu(xd) : xd;
    }
    return input;
  };
  const bool cpu_fused = g2.device().is_cpu() && g2.dtype() == DType::f32 && cpu_gemm_in_bf16() && wd.size(0) > 1;
  if (need_w && need_b && (g2.device().is_cuda() || cpu_fused)) {
    const int64_t in = wd.size(1), out_features = wd.size(0);
    Tensor gt = g2.t(), x2 = as_rows(cpu_fused ? xd : layer_input());
    MatrixOperand mg = matrix_operand(gt), mx = matrix_operand(x2);
    Tensor w_grad = empty({out_features, in}, {g2.dtype(), g2.device()});
    Tensor b_grad = empty({out_features}, {g2.dtype(), g2.device()});
    bool fused = false;
    if (cpu_fused) {
      cpu::gemm_f32_bf16_bias_grad(mg.transposed, mx.transposed, out_features, in, x2.size(0), gt.data<float>(), mg.ld,
                                   x2.data<float>(), mx.ld, w_grad.data<float>(), in, b_grad.data<float>(), gelu_of_x);
      fused = true;
    }
#ifdef BAM_WITH_CUDA
    if (g2.device().is_cuda()) {
      fused = cuda_kernels::gemm_bias_grad(g2.dtype(), mg.transposed, mx.transposed, out_features, in, x2.size(0),
                                           gt.raw_data(), mg.ld, x2.raw_data(), mx.ld, w_grad.raw_data(), in,
                                           b_grad.raw_data(), cuda::current_stream());
    }
#endif
    if (fused) {
      dw = w_grad;
      db = b_grad;
    }
  }
  if (need_w && !dw.defined()) dw = matmul(g2.t(), as_rows(layer_input()));
  if (need_b && !db.defined()) db = sum(g2, {0});
  return {dx, dw, db};
}

// x weight^T + bias, not recorded; with gelu_of_x, GELU(x) weight^T + bias (gelu_linear). On the CPU
// under bf16 autocast the GEMM adds the bias itself (its packed kernels start the accumulators from it) and
// applies the GELU while it packs x; elsewhere the GELU is computed first.
Tensor linear_product(const Tensor& x, const Tensor& weight, const Tensor& bias, bool gelu_of_x) {
  Device device = same_device("linear", {&x, &weight, &bias});
  require_same_dtype("linear", x, weight);
  BAM_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got {}", weight.describe());
  BAM_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input {} does not match weight {} (in = {})",
            x.describe(), weight.describe(), weight.size(1));
  const int64_t in = weight.size(1), out_features = weight.size(0);
  if (bias.defined()) {
    require_same_dtype("linear", x, bias);
    BAM_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "linear: bias {} does not match {} outputs",
              bias.describe(), out_features);
  }
  const bool cpu_bf16 = device.is_cpu() && x.dtype() == DType::f32 && cpu_gemm_in_bf16();
  Tensor x2, w = weight;
  {
    NoGradGuard no_grad;
    x2 = as_rows(gelu_of_x && !cpu_bf16 ? gelu(x) : x);
  }
  const int64_t rows = x2.size(0);
  MatrixOperand mx = matrix_operand(x2), mw = matrix_operand(w);
  Tensor out = empty({rows, out_features}, {x.dtype(), device});
  // out = x2 @ w^T: w stored [out, in] is the transposed form of the [in, out] operand.
  if (device.is_cuda()) {
    bool bias_fused = false;
    if (bias.defined()) {
      // cuBLASLt adds the bias in the GEMM's epilogue: no separate pass over the output. It
      // declines (f64, K = 0, a bias not 16-byte aligned, a layout without such an algorithm) by
      // returning false, and the copy below runs instead.
      Tensor bc = contiguous_data(bias);
      BAM_CUDA_BRANCH("linear", bias_fused = cuda_kernels::gemm_bias(
                                    x.dtype(), mx.transposed, !mw.transposed, rows, out_features, in, x2.raw_data(),
                                    mx.ld, w.raw_data(), mw.ld, bc.raw_data(), out.raw_data(), out_features,
                                    cuda::current_stream()));
    }
    if (!bias_fused) {
      // Every row starts as the bias (K = 0 leaves just that); the GEMM accumulates on top (beta = 1).
      if (bias.defined()) copy_into(out, bias);
      BAM_CUDA_BRANCH("linear", cuda_kernels::gemm(x.dtype(), mx.transposed, !mw.transposed, 1, rows, out_features,
                                                   in, x2.raw_data(), mx.ld, 0, w.raw_data(), mw.ld, 0,
                                                   bias.defined() ? 1.0f : 0.0f, out.raw_data(), out_features, 0,
                                                   cuda::current_stream()));
    }
  } else if (cpu_bf16) {
    Tensor bc = bias.defined() ? contiguous_data(bias) : Tensor();
    cpu::gemm_f32_bf16_bias(mx.transposed, !mw.transposed, rows, out_features, in, x2.data<float>(), mx.ld,
                            w.data<float>(), mw.ld, bias.defined() ? bc.data<float>() : nullptr, out.data<float>(),
                            out_features, gelu_of_x);
  } else {
    // Every row starts as the bias; the GEMM accumulates on top (beta = 1).
    if (bias.defined()) copy_into(out, bias);
    dispatch_floating("linear", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      gemm<T>(mx.transposed, !mw.transposed, rows, out_features, in, x2.data<T>(), mx.ld, w.data<T>(), mw.ld,
              bias.defined() ? T(1) : T(0), out.data<T>(), out_features);
    });
  }
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  out_shape.push_back(out_features);
  out = out.view(out_shape);

  return out;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  Tensor out = linear_product(x, weight, bias, false);
  Tensor xd = x.detach(), wd = weight.detach();
  bool need_x = x.requires_grad(), need_w = weight.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  const std::optional<DType> autocast = cpu_backward_autocast(out.device());
  return record("linear", out, {x, weight, bias}, [xd, wd, need_x, need_w, need_b, autocast](const Tensor& g) {
    ScopedAutocast scope(autocast);
    return linear_backward(g, xd, wd, need_x, need_w, need_b);
  });
}

Tensor gelu_linear(const Tensor& h, const Tensor& weight, const Tensor& bias) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = linear_product(h, weight, bias, true);
  }
  if (!any_requires_grad({&h, &weight, &bias})) return out;
  Tensor hd = contiguous_data(h).detach(), wd = weight.detach();
  bool need_h = h.requires_grad(), need_w = weight.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  const std::optional<DType> autocast = cpu_backward_autocast(h.device());
  return record("gelu_linear", out, {h, weight, bias}, [hd, wd, need_h, need_w, need_b, autocast](const Tensor& g) {
    ScopedAutocast scope(autocast);
    // GELU(h) again where a product needs it: the same kernel on the same input, so the same values
    // as the forward's (inside the GEMM's packing on the CPU under bf16).
    std::vector<Tensor> grads = linear_backward(g, hd, wd, need_h, need_w, need_b, true);
    if (need_h) grads[0] = unary_grad(cpu::UnaryOp::gelu_erf, "gelu_linear", hd, Tensor(), grads[0]);
    return grads;
  });
}

}  // namespace bam
