// Fitting a training run to a time budget (--fit_epochs_to_budget): how long the steps left and
// the work their epochs' ends bring take, and how many steps fit in the seconds left. The epoch
// ends are counted as the trainer does them (bam/trainer.cpp, Trainer::run): a checkpoint save
// after every epoch and one more on --saveckp_freq epochs, a kNN evaluation after every
// --knn_freq-th epoch and after the last, and ContrastiveCrop's box updates.
#pragma once

#include <cstdint>
#include <optional>

#include "bam/contrastive_crop.h"

namespace bam {

struct EpochEndWork {
  int64_t steps_per_epoch = 1;
  int64_t saveckp_freq = 0;                            // 0: no numbered checkpoints
  int64_t knn_freq = 0;                                // 0: no kNN monitor
  std::optional<ContrastiveCropSchedule> box_updates;  // with --use_ccrop
  // > 0: box_updates is the schedule of a run of this many epochs (--epochs, at the first fit), and
  // each step count is costed with it scaled to that count's epochs (ContrastiveCropSchedule::scaled).
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

}  // namespace bam
