// Schedule arithmetic.
#include "bam/schedules.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace bam {

CosineSchedule::CosineSchedule(double base, double final, int64_t total_steps, int64_t warmup_steps,
                               double warmup_start)
    : base_(base),
      final_(final),
      warmup_start_(warmup_start),
      total_(std::max<int64_t>(0, total_steps)),
      warmup_(std::min(total_, std::max<int64_t>(0, warmup_steps))) {}

double CosineSchedule::at(int64_t step) const {
  BAM_CHECK(step >= 0 && step < total_, "schedule: step {} outside [0, {})", step, total_);
  if (step < warmup_)
    return warmup_ == 1 ? warmup_start_
                        : warmup_start_ + (base_ - warmup_start_) * static_cast<double>(step) / (warmup_ - 1);
  const double progress = static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
  return final_ + 0.5 * (base_ - final_) * (1.0 + std::cos(M_PI * progress));
}

std::vector<double> cosine_schedule(double base, double final, int64_t epochs, int64_t steps_per_epoch,
                                    int64_t warmup_epochs, double warmup_start) {
  return cosine_schedule_steps(base, final, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch, warmup_start);
}

std::vector<double> cosine_schedule_steps(double base, double final, int64_t total, int64_t warmup_steps,
                                          double warmup_start) {
  const CosineSchedule schedule(base, final, total, warmup_steps, warmup_start);
  std::vector<double> values(static_cast<size_t>(schedule.total_steps()));
  for (int64_t i = 0; i < schedule.total_steps(); ++i) values[static_cast<size_t>(i)] = schedule.at(i);
  return values;
}

double reg_for_epoch(double reg, double reg_final, int64_t warmup_epochs, int64_t epoch) {
  if (epoch >= warmup_epochs) return reg_final;
  if (warmup_epochs <= 1) return reg;
  return reg + (reg_final - reg) * static_cast<double>(epoch) / static_cast<double>(warmup_epochs - 1);
}

}  // namespace bam
