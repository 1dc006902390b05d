// Schedule arithmetic.
#include "bam/schedules.h"

#include <algorithm>
#include <cmath>

namespace bam {

std::vector<double> cosine_schedule(double base, double final, int64_t epochs, int64_t steps_per_epoch,
                                    int64_t warmup_epochs, double warmup_start) {
  return cosine_schedule_steps(base, final, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch, warmup_start);
}

std::vector<double> cosine_schedule_steps(double base, double final, int64_t total, int64_t warmup_steps,
                                          double warmup_start) {
  const int64_t warmup = std::min(total, std::max<int64_t>(0, warmup_steps));
  std::vector<double> schedule;
  schedule.reserve(total);
  for (int64_t i = 0; i < warmup; ++i)
    schedule.push_back(warmup == 1 ? warmup_start
                                   : warmup_start + (base - warmup_start) * static_cast<double>(i) / (warmup - 1));
  const int64_t rest = total - warmup;
  for (int64_t i = 0; i < rest; ++i) {
    double progress = static_cast<double>(i) / static_cast<double>(rest);
    schedule.push_back(final + 0.5 * (base - final) * (1.0 + std::cos(M_PI * progress)));
  }
  return schedule;
}

double reg_for_epoch(double reg, double reg_final, int64_t warmup_epochs, int64_t epoch) {
  if (epoch >= warmup_epochs) return reg_final;
  if (warmup_epochs <= 1) return reg;
  return reg + (reg_final - reg) * static_cast<double>(epoch) / static_cast<double>(warmup_epochs - 1);
}

}  // namespace bam
