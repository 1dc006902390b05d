// The time budget's arithmetic (budget_fit.h).
#include "bam/budget_fit.h"

#include <algorithm>

namespace bam {

double seconds_to_finish(const EpochEndWork& work, double step_seconds, int64_t from_step, int64_t total) {
  // Counted, not looped over: a run may be asked for a billion epochs, and this is asked at every
  // logged step (the progress line's eta).
  const int64_t per_epoch = work.steps_per_epoch;
  const int64_t first = from_step > 0 ? (from_step - 1) / per_epoch : 0;
  const int64_t last = (total - 1) / per_epoch;
  double t = static_cast<double>(total - from_step) * step_seconds;
  if (last < first) return t;
  const int64_t epochs = last - first + 1;
  t += static_cast<double>(epochs) * work.save_seconds;  // every epoch's checkpoint
  if (work.saveckp_freq > 0) t += static_cast<double>(multiples_in(first, last, work.saveckp_freq)) * work.save_seconds;
  if (work.knn_freq > 0) {
    // After every knn_freq-th epoch (e + 1 a multiple), and after the last in any case.
    const int64_t evaluations = multiples_in(first + 1, last + 1, work.knn_freq) + ((last + 1) % work.knn_freq != 0);
    t += static_cast<double>(evaluations) * work.knn_seconds;
  }
  if (std::optional<ContrastiveCropSchedule> boxes = work.box_updates) {
    if (work.box_schedule_epochs > 0) boxes = boxes->scaled(work.box_schedule_epochs, last + 1);
    t += static_cast<double>(boxes->renewals_between(first, last, last + 1)) * work.box_update_seconds;
  }
  return t;
}

int64_t steps_within(const EpochEndWork& work, double seconds, double step_seconds, int64_t from_step) {
  // seconds_to_finish grows with the step count: the largest count that fits, by bisection.
  int64_t lo = from_step + 1, hi = from_step + 1 + static_cast<int64_t>(seconds / std::max(step_seconds, 1e-9));
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (seconds_to_finish(work, step_seconds, from_step, mid) <= seconds) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

RefitPlan first_refit_plan(int64_t max_steps) {
  RefitPlan plan;
  plan.at_step = std::clamp<int64_t>(max_steps / 20, 9, 60);
  plan.window_start = plan.at_step / 3;
  if (plan.at_step >= max_steps) plan.at_step = -1;
  return plan;
}

RefitPlan next_refit_plan(const RefitPlan& before, int64_t step, int64_t max_steps) {
  RefitPlan plan = before;  // the window keeps its start: it grows with the run
  if (!before.first_done()) plan.interval = std::max<int64_t>({1, step, max_steps / 20});
  plan.at_step = step + plan.interval;
  if (plan.at_step >= max_steps) plan.at_step = -1;
  return plan;
}

bool refit_restarts_warmup(const RefitPlan& plan, int64_t step, int64_t warmup_steps) {
  return !plan.first_done() && step < warmup_steps;
}

}  // namespace bam
