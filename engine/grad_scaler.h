// Dynamic loss scaling for fp16 training (torch.cuda.amp.GradScaler's rule). fp16 keeps only 5
// exponent bits, so small gradients underflow to zero; multiplying the loss by a large scale
// before backward shifts every gradient up into range. Before the optimizer step the gradients
// are divided by the scale again and checked: if any is inf or NaN the scale was too large, the
// step is skipped and the scale shrinks (backoff); after `growth_interval` clean steps in a row
// it grows again. bf16 has f32's exponent range and needs none of this (enabled = false).
#pragma once

#include <vector>

#include "engine/tensor.h"

namespace bam {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  explicit GradScaler(bool enabled, GradScalerOptions options = {});

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }

  // loss * scale (the loss itself when disabled): call backward on this.
  Tensor scale_loss(const Tensor& loss) const;
  // Divides every existing gradient of `params` by the scale, in place, and returns true when all
  // of them are finite. One value is read back from the device. A no-op returning true when disabled.
  bool unscale(const std::vector<Tensor>& params);
  // The same division, returning the unscaled gradients' sum of squares as a one-element f64
  // tensor on their device without reading it (finite exactly when every gradient is), so that a
  // caller can read it together with other values in one wait. Undefined (nothing to check) when
  // disabled or no gradient exists.
  Tensor unscale_queued(const std::vector<Tensor>& params);
  // After the step (finite: it was taken) or instead of it (!finite: skipped): adjusts the scale.
  void update(bool finite);
  // The scale has backed off below 2^-24, fp16's smallest value: a scaled gradient that still
  // overflows does so at any scale, and skipping on would skip every step in silence (until the
  // scale reached 0 and the steps applied nothing).
  bool exhausted() const { return enabled_ && scale_ < 0x1p-24; }

  // For checkpoints: the scale and the clean-step counter.
  void load_state(double scale, int64_t clean_steps) { scale_ = scale, clean_steps_ = clean_steps; }
  int64_t clean_steps() const { return clean_steps_; }

 private:
  bool enabled_;
  GradScalerOptions options_;
  double scale_;
  int64_t clean_steps_ = 0, skipped_ = 0;
};

}  // namespace bam
