// Fitting a training run to a time budget (--fit_epochs_to_budget): how long the steps left and
// the work their epochs' ends bring take, and how many steps fit in the seconds left. The epoch
// ends are counted as the trainer does them (bam/trainer.cpp, Trainer::run): a checkpoint save
// after every epoch and one more on --saveckp_freq epochs, a kNN evaluation after every
// --knn_freq-th epoch and after the last, and ContrastiveCrop's box updates.
#pragma once

#include <cstdint>
#include <optional>

#include "bam/contrastive_crop_schedule.h"

namespace bam {

struct EpochEndWork {
  int64_t steps_per_epoch = 1;
  int64_t saveckp_freq = 0;                            // 0: no numbered checkpoints
  int64_t knn_freq = 0;                                // 0: no kNN monitor
  std::optional<ContrastiveCropSchedule> box_updates;  // with --use_ccrop
  // > 0: box_updates is to be scaled from a run of this many epochs (--epochs; at the fit before
  // training and the first refit), and each step count is costed with it scaled to that count's
  // epochs (ContrastiveCropSchedule::scaled).
  int64_t box_schedule_epochs = 0;
  // What one of each costs, in seconds.
  double save_seconds = 0, knn_seconds = 0, box_update_seconds = 0;
};

// Seconds for the steps [from_step, total), at step_seconds each, and the ends of the epochs from
// the one whose end is still to come (the epoch of step from_step, or, when from_step ends an
// epoch, that epoch) to the epoch the run ends in.
double seconds_to_finish(const EpochEndWork& work, double step_seconds, int64_t from_step, int64_t total);

// The most steps in all (at least from_step + 1) whose seconds_to_finish fit in `seconds`.
int64_t steps_within(const EpochEndWork& work, double seconds, double step_seconds, int64_t from_step);

// When a fitted schedule is refitted from the real steps' times. The first refit comes early in
// the warm-up, at a twentieth of the plan within [9, 60] steps, from the steps after the first
// third of the way there (past start-up costs); it sets the interval of the later ones, a twentieth
// of its own plan (at least its own step), about twenty more in the run. None is planned at or past
// the plan's end.
struct RefitPlan {
  int64_t at_step = -1;      // the next refit; -1: none (the run ends first)
  int64_t window_start = 0;  // the steps after this one are timed
  int64_t interval = 0;      // between the refits after the first; 0 until the first
  bool first_done() const { return interval > 0; }
};
RefitPlan first_refit_plan(int64_t max_steps);
// The plan after the refit at `step` made the schedule `max_steps` steps long.
RefitPlan next_refit_plan(const RefitPlan& before, int64_t step, int64_t max_steps);
// Whether the refit at `step` sets the warm-up anew (a tenth of its plan): the first refit does,
// while the warm-up of `warmup_steps` still runs (the later ones only move the end of the cosine
// decay; a short plan's warm-up that ended before the first refit stays ended).
bool refit_restarts_warmup(const RefitPlan& plan, int64_t step, int64_t warmup_steps);

}  // namespace bam
