// Loss scaling: scale, unscale-and-check, and the scale's growth and backoff (grad_scaler.h).
#include "engine/grad_scaler.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cuda/optimizer.h"

namespace bam {

GradScaler::GradScaler(bool enabled, GradScalerOptions options)
    : enabled_(enabled), options_(options), scale_(enabled ? options.init_scale : 1.0) {
  BAM_CHECK(options.init_scale > 0 && options.growth_factor > 1 && options.backoff_factor > 0 &&
                options.backoff_factor < 1 && options.growth_interval >= 1,
            "GradScaler: needs init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1, growth_interval >= 1");
}

Tensor GradScaler::scale_loss(const Tensor& loss) const { return enabled_ ? mul(loss, scale_) : loss; }

bool GradScaler::unscale(const std::vector<Tensor>& params) {
  const Tensor sum_of_squares = unscale_queued(params);
  return !sum_of_squares.defined() || std::isfinite(sum_of_squares.item());
}

Tensor GradScaler::unscale_queued(const std::vector<Tensor>& params) {
  if (!enabled_) return Tensor();
  NoGradGuard no_grad;
  const float inverse = static_cast<float>(1.0 / scale_);
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (Tensor g = p.grad(); g.defined()) {
      BAM_CHECK(g.dtype() == DType::f32 && g.is_contiguous(),
                "GradScaler: gradients must be contiguous f32 (the master weights'), got {}", g.describe());
      grads.push_back(g);
    }
  if (grads.empty()) return Tensor();
  // A sum of squares is finite exactly when every term is: one number tells inf/NaN anywhere.
  Tensor total = zeros({1}, {DType::f64, grads.front().device()});
  if (total.device().is_cuda()) {
    BAM_CUDA_BRANCH("GradScaler.unscale", [&] {
      // One multi-tensor pass scales every gradient and sums the squares of the results.
      std::vector<cuda_kernels::FloatSpan> spans;
      for (Tensor& g : grads) {
        BAM_CHECK(g.device() == total.device(), "GradScaler: gradients on different devices");
        spans.push_back({g.data<float>(), g.numel()});
      }
      cuda_kernels::unscale_many(spans.data(), static_cast<int64_t>(spans.size()), inverse, total.data<double>(),
                                 cuda::current_stream());
    }());
  } else {
    double sum_of_squares = 0;
    for (Tensor& g : grads) {
      cpu::scale_in_place(g.data<float>(), g.numel(), inverse);
      sum_of_squares += cpu::sum_of_squares(g.data<float>(), g.numel());
    }
    total.data<double>()[0] = sum_of_squares;
  }
  return total;
}

void GradScaler::update(bool finite) {
  if (!enabled_) return;
  if (!finite) {
    scale_ *= options_.backoff_factor;
    clean_steps_ = 0;
    ++skipped_;
    return;
  }
  if (++clean_steps_ >= options_.growth_interval) {
    // As torch: a scale that would overflow stays where it is (an infinite scale makes every
    // scaled loss inf, and every step would be skipped from then on).
    if (std::isfinite(scale_ * options_.growth_factor)) scale_ *= options_.growth_factor;
    clean_steps_ = 0;
  }
}

}  // namespace bam
