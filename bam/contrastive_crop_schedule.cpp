// ContrastiveCropSchedule::renews_after and same_from: see contrastive_crop_schedule.h.
#include "bam/contrastive_crop_schedule.h"

namespace bam {

bool ContrastiveCropSchedule::renews_after(int64_t epoch, int64_t epochs) const {
  if (epoch == epochs - 1) return false;  // never after the run's last epoch
  if (!is_scaled()) return epoch >= warmup_epochs && epoch % loc_interval == 0;
  // The requested run's renewals in order (those after its last epoch left out), until one lands
  // past `epoch` in this run.
  for (int64_t k = 0;; ++k) {
    const int64_t e = unscaled_renewal(k);
    if (e >= scaled_from - 1) return false;
    const int64_t here = in_this_run(e);
    if (here == epoch) return true;
    if (here > epoch) return false;
  }
}

bool ContrastiveCropSchedule::same_from(const ContrastiveCropSchedule& other, int64_t epoch, int64_t epochs) const {
  const auto used_from = [&](const ContrastiveCropSchedule& s) { return std::max(s.first_epoch(), epoch); };
  if (used_from(*this) != used_from(other)) return false;
  for (int64_t e = epoch; e < epochs; ++e)
    if (renews_after(e, epochs) != other.renews_after(e, epochs)) return false;
  return true;
}

}  // namespace bam
