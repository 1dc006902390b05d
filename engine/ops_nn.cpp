// Neural-network ops: softmax, log_softmax, layer_norm, batch_norm, dropout, drop_path,
// l2_normalize and the cross-entropy losses.
#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/l2_normalize.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cuda/batch_norm.h"
#include "kernels/cuda/rows.h"

namespace bam {
using namespace detail;

namespace {

// softmax and log_softmax share everything but the kernels.
Tensor softmax_like(bool log_form, const Tensor& x, int64_t dim) {
  const char* name = log_form ? "log_softmax" : "softmax";
  require_floating(name, x);
  if (x.dim() == 0) return softmax_like(log_form, x.reshape({1}), 0).reshape({});
  int64_t d = normalize_dim(dim, x.dim(), name);
  Tensor xl = move_dim_last(x, d);
  const int64_t cols = xl.size(-1), rows = xl.numel() / std::max<int64_t>(cols, 1);
  Tensor yl = empty(xl.shape(), {x.dtype(), x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH(name, cuda_kernels::softmax_forward(log_form, x.dtype(), xl.raw_data(), yl.raw_data(), rows, cols,
                                                        cuda::current_stream()));
  } else {
    dispatch_floating(name, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (log_form) cpu::log_softmax_forward<T>(xl.data<T>(), yl.data<T>(), rows, cols);
      else cpu::softmax_forward<T>(xl.data<T>(), yl.data<T>(), rows, cols);
    });
  }
  Tensor out = restore_dim(yl, d);
  Tensor saved = yl.detach();
  return record(name, out, {x}, [saved, d, log_form, rows, cols, name](const Tensor& g) {
    Tensor gl = move_dim_last(g, d);
    Tensor dl = empty(gl.shape(), {g.dtype(), g.device()});
    if (g.device().is_cuda()) {
      BAM_CUDA_BRANCH(name, cuda_kernels::softmax_backward(log_form, g.dtype(), saved.raw_data(), gl.raw_data(),
                                                           dl.raw_data(), rows, cols, cuda::current_stream()));
      return std::vector<Tensor>{restore_dim(dl, d)};
    }
    dispatch_floating(name, g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (log_form) cpu::log_softmax_backward<T>(saved.data<T>(), gl.data<T>(), dl.data<T>(), rows, cols);
      else cpu::softmax_backward<T>(saved.data<T>(), gl.data<T>(), dl.data<T>(), rows, cols);
    });
    return std::vector<Tensor>{restore_dim(dl, d)};
  });
}

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// For the CUDA branches (unused in a CPU-only build).
[[maybe_unused]] void* raw_or_null(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_like(false, x, dim); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_like(true, x, dim); }

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return layer_norm(x, weight, bias, eps, x.dtype());
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, DType out_dtype) {
  same_device("layer_norm", {&x, &weight, &bias});
  require_floating("layer_norm", x);
  BAM_CHECK(is_floating(out_dtype), "layer_norm: the output dtype must be floating, got {}", dtype_name(out_dtype));
  BAM_CHECK(x.dim() >= 1, "layer_norm: expects at least 1 dim, got {}", x.describe());
  const int64_t cols = x.size(-1), rows = x.numel() / std::max<int64_t>(cols, 1);
  for (const Tensor* p : {&weight, &bias})
    if (p->defined()) {
      require_same_dtype("layer_norm", x, *p);
      BAM_CHECK(p->dim() == 1 && p->size(0) == cols, "layer_norm: expected last dim {} for parameter {}, input {}",
                cols, p->describe(), x.describe());
    }
  Tensor xc = contiguous_data(x), wc = weight.defined() ? contiguous_data(weight) : Tensor(),
         bc = bias.defined() ? contiguous_data(bias) : Tensor();
  Tensor out = empty(x.shape(), {out_dtype, x.device()});
  TensorOptions stat_options{stat_dtype(x.dtype()), x.device()};
  Tensor mean = empty({rows}, stat_options), rstd = empty({rows}, stat_options);
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH("layer_norm", cuda_kernels::layer_norm_forward(x.dtype(), out_dtype, xc.raw_data(),
                                                                   raw_or_null(wc), raw_or_null(bc), out.raw_data(),
                                                                   mean.raw_data(), rstd.raw_data(), rows, cols, eps,
                                                                   cuda::current_stream()));
  } else {
    // The CPU specification of the fused form: normalise in x's dtype, then convert.
    Tensor y = out_dtype == x.dtype() ? out : empty(x.shape(), {x.dtype(), x.device()});
    dispatch_floating("layer_norm", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::layer_norm_forward<T>(xc.data<T>(), data_or_null<T>(wc), data_or_null<T>(bc), y.data<T>(),
                                 mean.data<T>(), rstd.data<T>(), rows, cols, eps);
    });
    if (out_dtype != x.dtype()) cpu::convert(y.raw_data(), x.dtype(), out.raw_data(), out_dtype, y.numel());
  }
  if (!any_requires_grad({&x, &weight, &bias})) return out;
  Tensor xd = xc.detach(), wd = wc.defined() ? wc.detach() : Tensor();
  bool need_x = x.requires_grad(), need_w = weight.defined() && weight.requires_grad(),
       need_b = bias.defined() && bias.requires_grad();
  return record("layer_norm", out, {x, weight, bias},
                [xd, wd, mean, rstd, rows, cols, need_x, need_w, need_b](const Tensor& g) {
                  // The gradients are in x's dtype; the incoming one is in the output's.
                  Tensor gc = contiguous_data(g);
                  TensorOptions o{xd.dtype(), g.device()};
                  Tensor dx = need_x ? empty(xd.shape(), o) : Tensor();
                  Tensor dw = need_w ? empty({cols}, o) : Tensor(), db = need_b ? empty({cols}, o) : Tensor();
                  if (g.device().is_cuda()) {
#ifdef BAM_WITH_CUDA
                    // Scratch holds the column sums' partial rows: none when only dx is wanted.
                    size_t bytes = need_w || need_b
                                       ? cuda_kernels::layer_norm_backward_scratch_bytes(xd.dtype(), rows, cols)
                                       : 0;
                    Tensor scratch = empty({static_cast<int64_t>(bytes)}, {DType::u8, g.device()});
                    cuda_kernels::layer_norm_backward(xd.dtype(), gc.dtype(), xd.raw_data(), raw_or_null(wd),
                                                      mean.raw_data(), rstd.raw_data(), gc.raw_data(),
                                                      raw_or_null(dx), raw_or_null(dw), raw_or_null(db), rows, cols,
                                                      scratch.raw_data(), cuda::current_stream());
#else
                    fail("layer_norm: this build has no CUDA backend");
#endif
                    return std::vector<Tensor>{dx, dw, db};
                  }
                  if (gc.dtype() != xd.dtype()) {
                    Tensor converted = empty(gc.shape(), o);
                    cpu::convert(gc.raw_data(), gc.dtype(), converted.raw_data(), xd.dtype(), gc.numel());
                    gc = converted;
                  }
                  dispatch_floating("layer_norm", xd.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    cpu::layer_norm_backward<T>(xd.data<T>(), data_or_null<T>(wd), mean.data<T>(), rstd.data<T>(),
                                                gc.data<T>(), need_x ? dx.data<T>() : nullptr,
                                                need_w ? dw.data<T>() : nullptr, need_b ? db.data<T>() : nullptr, rows,
                                                cols);
                  });
                  return std::vector<Tensor>{dx, dw, db};
                });
}

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  same_device("batch_norm", {&x, &weight, &bias, &running_mean, &running_var});
  require_floating("batch_norm", x);
  BAM_CHECK(x.dim() == 2 || x.dim() == 3, "batch_norm: expects [N, C] or [N, C, L], got {}", x.describe());
  const int64_t N = x.size(0), C = x.size(1), L = x.dim() == 3 ? x.size(2) : 1;
  for (const Tensor* p : {&weight, &bias, &running_mean, &running_var})
    if (p->defined()) {
      require_same_dtype("batch_norm", x, *p);
      BAM_CHECK(p->dim() == 1 && p->size(0) == C, "batch_norm: expected {} channels for {}, input {}", C,
                p->describe(), x.describe());
    }
  BAM_CHECK(training || (running_mean.defined() && running_var.defined()),
            "batch_norm: evaluation mode needs running statistics");
  if (training) BAM_CHECK(N * L > 1, "batch_norm: training needs more than one value per channel, got {}", x.describe());
  Tensor xc = contiguous_data(x), wc = weight.defined() ? contiguous_data(weight) : Tensor(),
         bc = bias.defined() ? contiguous_data(bias) : Tensor();
  TensorOptions o{x.dtype(), x.device()}, stat_options{stat_dtype(x.dtype()), x.device()};
  Tensor mean = empty({C}, stat_options), rstd = empty({C}, stat_options), out = empty(x.shape(), o);
  if (x.device().is_cuda()) {
    [[maybe_unused]] bool update_running = training && running_mean.defined() && running_var.defined();
    if (running_mean.defined() && running_var.defined())
      BAM_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(),
                "batch_norm: running statistics must be contiguous tensors");
    BAM_CUDA_BRANCH("batch_norm",
                    cuda_kernels::batch_norm_forward(
                        x.dtype(), xc.raw_data(), raw_or_null(wc), raw_or_null(bc),
                        update_running || !training ? running_mean.raw_data() : nullptr,
                        update_running || !training ? running_var.raw_data() : nullptr, training, momentum, eps,
                        mean.raw_data(), rstd.raw_data(), out.raw_data(), N, C, L, cuda::current_stream()));
  } else {
  dispatch_floating("batch_norm", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* m = mean.data<T>();
    T* r = rstd.data<T>();
    if (training) {
      Tensor var_biased = empty({C}, o);
      T* v = var_biased.data<T>();
      cpu::batch_norm_stats<T>(xc.data<T>(), m, v, N, C, L);
      for (int64_t c = 0; c < C; ++c) r[c] = static_cast<T>(1.0 / std::sqrt(double(v[c]) + eps));
      if (running_mean.defined() && running_var.defined()) {
        NoGradGuard no_grad;
        Tensor rm = contiguous_data(running_mean), rv = contiguous_data(running_var);
        BAM_CHECK(rm.same(running_mean) && rv.same(running_var),
                  "batch_norm: running statistics must be contiguous tensors");
        T* pm = rm.data<T>();
        T* pv = rv.data<T>();
        const double n = static_cast<double>(N * L);
        for (int64_t c = 0; c < C; ++c) {
          pm[c] = static_cast<T>((1 - momentum) * pm[c] + momentum * m[c]);
          pv[c] = static_cast<T>((1 - momentum) * pv[c] + momentum * v[c] * n / (n - 1));
        }
      }
    } else {
      Tensor rm = contiguous_data(running_mean), rv = contiguous_data(running_var);
      for (int64_t c = 0; c < C; ++c) {
        m[c] = rm.data<T>()[c];
        r[c] = static_cast<T>(1.0 / std::sqrt(double(rv.data<T>()[c]) + eps));
      }
    }
    cpu::batch_norm_apply<T>(xc.data<T>(), m, r, data_or_null<T>(wc), data_or_null<T>(bc), out.data<T>(), N, C, L);
  });
  }
  if (!any_requires_grad({&x, &weight, &bias})) return out;
  Tensor xd = xc.detach(), wd = wc.defined() ? wc.detach() : Tensor();
  bool need_x = x.requires_grad(), need_w = weight.defined() && weight.requires_grad(),
       need_b = bias.defined() && bias.requires_grad();
  return record("batch_norm", out, {x, weight, bias},
                [xd, wd, mean, rstd, N, C, L, training, need_x, need_w, need_b](const Tensor& g) {
                  Tensor gc = contiguous_data(g);
                  TensorOptions o{g.dtype(), g.device()};
                  Tensor dx = need_x ? empty(xd.shape(), o) : Tensor();
                  Tensor dw = need_w ? empty({C}, o) : Tensor(), db = need_b ? empty({C}, o) : Tensor();
                  if (g.device().is_cuda()) {
                    Tensor scratch = empty({2 * C}, {stat_dtype(g.dtype()), g.device()});
                    BAM_CUDA_BRANCH("batch_norm",
                                    cuda_kernels::batch_norm_backward(
                                        g.dtype(), xd.raw_data(), mean.raw_data(), rstd.raw_data(), raw_or_null(wd),
                                        gc.raw_data(), raw_or_null(dx), raw_or_null(dw), raw_or_null(db), N, C, L,
                                        training, scratch.raw_data(), cuda::current_stream()));
                    return std::vector<Tensor>{dx, dw, db};
                  }
                  dispatch_floating("batch_norm", g.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    cpu::batch_norm_backward<T>(xd.data<T>(), mean.data<T>(), rstd.data<T>(), data_or_null<T>(wd),
                                                gc.data<T>(), need_x ? dx.data<T>() : nullptr,
                                                need_w ? dw.data<T>() : nullptr, need_b ? db.data<T>() : nullptr, N, C,
                                                L, training);
                  });
                  return std::vector<Tensor>{dx, dw, db};
                });
}

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  BAM_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got {}", p);
  if (!training || p == 0) return x;
  Tensor keep;
  {
    NoGradGuard no_grad;
    keep = div(lt(rand(x.shape(), {DType::f32, x.device()}, gen), 1.0 - p).to(x.dtype()), 1.0 - p);
  }
  return mul(x, keep);
}

Tensor drop_path(const Tensor& x, double p, bool training, Generator* gen) {
  BAM_CHECK(p >= 0 && p < 1, "drop_path: probability must be in [0, 1), got {}", p);
  if (!training || p == 0) return x;
  BAM_CHECK(x.dim() >= 1, "drop_path: drops whole samples of a batch dimension, got {}", x.describe());
  Shape mask_shape(x.dim(), 1);
  mask_shape[0] = x.size(0);
  Tensor keep;
  {
    NoGradGuard no_grad;
    keep = div(lt(rand(mask_shape, {DType::f32, x.device()}, gen), 1.0 - p).to(x.dtype()), 1.0 - p);
  }
  return mul(x, keep);
}

Tensor l2_normalize(const Tensor& x, int64_t dim, double eps) {
  require_floating("l2_normalize", x);
  int64_t d = normalize_dim(dim, x.dim(), "l2_normalize");
  Tensor xl = move_dim_last(x, d);
  const int64_t cols = xl.size(-1), rows = xl.numel() / std::max<int64_t>(cols, 1);
  Tensor yl = empty(xl.shape(), {x.dtype(), x.device()}), norms = empty({rows}, {stat_dtype(x.dtype()), x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH("l2_normalize", cuda_kernels::l2_normalize_forward(x.dtype(), xl.raw_data(), yl.raw_data(),
                                                                       norms.raw_data(), rows, cols, eps,
                                                                       cuda::current_stream()));
  } else {
    dispatch_floating("l2_normalize", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::l2_normalize_forward<T>(xl.data<T>(), yl.data<T>(), norms.data<T>(), rows, cols, eps);
    });
  }
  Tensor saved = yl.detach();
  return record("l2_normalize", restore_dim(yl, d), {x}, [saved, norms, d, rows, cols, eps](const Tensor& g) {
    Tensor gl = move_dim_last(g, d);
    Tensor dl = empty(gl.shape(), {g.dtype(), g.device()});
    if (g.device().is_cuda()) {
      BAM_CUDA_BRANCH("l2_normalize", cuda_kernels::l2_normalize_backward(g.dtype(), saved.raw_data(),
                                                                          norms.raw_data(), gl.raw_data(),
                                                                          dl.raw_data(), rows, cols, eps,
                                                                          cuda::current_stream()));
      return std::vector<Tensor>{restore_dim(dl, d)};
    }
    dispatch_floating("l2_normalize", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::l2_normalize_backward<T>(saved.data<T>(), norms.data<T>(), gl.data<T>(), dl.data<T>(), rows, cols, eps);
    });
    return std::vector<Tensor>{restore_dim(dl, d)};
  });
}

Tensor soft_cross_entropy(const Tensor& logits, const Tensor& target) {
  BAM_CHECK(logits.dim() == 2 && target.shape() == logits.shape(),
            "soft_cross_entropy: expects logits [N, C] and targets of the same shape, got {} and {}",
            logits.describe(), target.describe());
  return neg(mean(sum(mul(target, log_softmax(logits, 1)), {1})));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  BAM_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.size(0) == logits.size(0),
            "cross_entropy: expects logits [N, C] and labels [N], got {} and {}", logits.describe(), labels.describe());
  BAM_CHECK(labels.dtype() == DType::i64, "cross_entropy: labels must be i64, got {}", labels.describe());
  if (labels.device().is_cpu()) {  // on a GPU, gather reports a bad label at the next wait
    const Tensor lc = labels.contiguous();
    const int64_t* l = lc.data<int64_t>();
    for (int64_t i = 0; i < lc.numel(); ++i)
      BAM_CHECK(l[i] >= 0 && l[i] < logits.size(1), "cross_entropy: label {} (row {}) is outside the {} classes", l[i],
                i, logits.size(1));
  }
  return neg(mean(gather(log_softmax(logits, 1), 1, labels.unsqueeze(1))));
}

}  // namespace bam
