// The reference for ContrastiveCropSchedule's computed renewals: the rule of
// bam/contrastive_crop_schedule.h asked of one epoch at a time, as the schedule once did (and as a
// run of a billion epochs cannot afford at every logged step). Shared by the schedule's tests and
// the time budget's.
#pragma once

#include <cmath>
#include <cstdint>

#include "bam/contrastive_crop_schedule.h"

namespace bam::test {

inline bool scanned_renews_after(const ContrastiveCropSchedule& s, int64_t epoch, int64_t epochs) {
  if (epoch >= epochs - 1) return false;  // never after the run's last epoch
  const int64_t first_multiple = (s.warmup_epochs + s.loc_interval - 1) / s.loc_interval;
  if (!s.is_scaled()) return epoch >= s.warmup_epochs && epoch % s.loc_interval == 0;
  // The requested run's renewals (before its last epoch) at the same fraction of this run.
  for (int64_t k = 0;; ++k) {
    const int64_t e = (first_multiple + k) * s.loc_interval;
    if (e >= s.scaled_from - 1) return false;
    const int64_t here = std::llround(double(e) * double(s.scaled_to) / double(s.scaled_from));
    if (here == epoch) return true;
    if (here > epoch) return false;
  }
}

}  // namespace bam::test
