// ContrastiveCropSchedule::renews_after and same_from: see contrastive_crop_schedule.h.
#include "bam/contrastive_crop_schedule.h"

#include <algorithm>

namespace bam {

int64_t ContrastiveCropSchedule::scaled_renewal_count() const {
  // unscaled_renewal(k) <= scaled_from - 2, solved for k.
  const int64_t first_multiple = (warmup_epochs + loc_interval - 1) / loc_interval;
  if (scaled_from < 2) return 0;
  return std::max<int64_t>(0, (scaled_from - 2) / loc_interval - first_multiple + 1);
}

int64_t ContrastiveCropSchedule::next_renewal(int64_t from, int64_t epochs) const {
  from = std::max<int64_t>(from, 0);
  int64_t e = kNever;
  if (!is_scaled()) {
    // The first multiple of L from max(from, W) on.
    const int64_t start = std::max(from, warmup_epochs);
    e = (start + loc_interval - 1) / loc_interval * loc_interval;
  } else {
    // The requested run's renewals land in this one in order (in_this_run never decreases), so
    // the first at or after `from` is found by bisection over them.
    int64_t lo = 0, hi = scaled_renewal_count();  // the first k in [lo, hi) landing at or after from
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (in_this_run(unscaled_renewal(mid)) >= from) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    if (lo < scaled_renewal_count()) e = in_this_run(unscaled_renewal(lo));
  }
  return e <= epochs - 2 ? e : kNever;  // never after the run's last epoch
}

int64_t ContrastiveCropSchedule::renewals_between(int64_t first, int64_t last, int64_t epochs) const {
  first = std::max<int64_t>(first, 0);
  last = std::min(last, epochs - 2);
  if (last < first) return 0;
  if (!is_scaled()) {
    // The multiples of L in [max(first, W), last].
    const int64_t start = std::max(first, warmup_epochs);
    if (last < start) return 0;
    return last / loc_interval - (start + loc_interval - 1) / loc_interval + 1;
  }
  // A scaled run has no more renewals than epochs: step from one to the next.
  int64_t count = 0;
  for (int64_t e = next_renewal(first, epochs); e <= last; e = next_renewal(e + 1, epochs)) ++count;
  return count;
}

bool ContrastiveCropSchedule::same_from(const ContrastiveCropSchedule& other, int64_t epoch, int64_t epochs) const {
  const auto used_from = [&](const ContrastiveCropSchedule& s) { return std::max(s.first_epoch(), epoch); };
  if (used_from(*this) != used_from(other)) return false;
  if (loc_interval == other.loc_interval && warmup_epochs == other.warmup_epochs &&
      (is_scaled() ? scaled_from == other.scaled_from && scaled_to == other.scaled_to : !other.is_scaled()))
    return true;  // the same schedule
  // The renewals to come, compared one by one up to the first that differs.
  int64_t mine = next_renewal(epoch, epochs), theirs = other.next_renewal(epoch, epochs);
  while (mine == theirs && mine != kNever) {
    mine = next_renewal(mine + 1, epochs);
    theirs = other.next_renewal(theirs + 1, epochs);
  }
  return mine == theirs;
}

}  // namespace bam
