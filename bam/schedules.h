// Per-iteration schedules, as DINO/BAM's cosine_scheduler: an optional linear warm-up from
// `warmup_start` to `base`, then a half cosine from `base` to `final`. The trainer asks a
// CosineSchedule for each step's value; nothing is stored per step, so a long run costs no memory.
#pragma once

#include <cstdint>
#include <vector>

namespace bam {

class CosineSchedule {
 public:
  CosineSchedule() = default;
  CosineSchedule(double base, double final, int64_t total_steps, int64_t warmup_steps, double warmup_start = 0.0);
  // The value at step `step` of [0, total_steps): the official script's array, element `step`.
  double at(int64_t step) const;
  int64_t total_steps() const { return total_; }

 private:
  double base_ = 0, final_ = 0, warmup_start_ = 0;
  int64_t total_ = 0, warmup_ = 0;
};

// Every step's value, as the official cosine_scheduler's array (for tests and tools).
std::vector<double> cosine_schedule(double base, double final, int64_t epochs, int64_t steps_per_epoch,
                                    int64_t warmup_epochs = 0, double warmup_start = 0.0);
// The same over a number of steps that need not fill whole epochs.
std::vector<double> cosine_schedule_steps(double base, double final, int64_t total_steps, int64_t warmup_steps,
                                          double warmup_start = 0.0);

// The Sinkhorn eps for an epoch: linear from `reg` to `reg_final` over the first `warmup_epochs`
// epochs (inclusive end points, as np.linspace), then `reg_final`.
double reg_for_epoch(double reg, double reg_final, int64_t warmup_epochs, int64_t epoch);

}  // namespace bam
