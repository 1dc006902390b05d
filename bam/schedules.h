// Per-iteration schedules, as DINO/BAM's cosine_scheduler: an optional linear warm-up from
// `warmup_start` to `base`, then a half cosine from `base` to `final`.
#pragma once

#include <cstdint>
#include <vector>

namespace bam {

std::vector<double> cosine_schedule(double base, double final, int64_t epochs, int64_t steps_per_epoch,
                                    int64_t warmup_epochs = 0, double warmup_start = 0.0);
// The same over a number of steps that need not fill whole epochs.
std::vector<double> cosine_schedule_steps(double base, double final, int64_t total_steps, int64_t warmup_steps,
                                          double warmup_start = 0.0);

// The Sinkhorn eps for an epoch: linear from `reg` to `reg_final` over the first `warmup_epochs`
// epochs (inclusive end points, as np.linspace), then `reg_final`.
double reg_for_epoch(double reg, double reg_final, int64_t warmup_epochs, int64_t epoch);

}  // namespace bam
