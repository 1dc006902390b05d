// ContrastiveCropSchedule's renewals, computed rather than scanned: see contrastive_crop_schedule.h.
#include "bam/contrastive_crop_schedule.h"

#include <algorithm>

namespace bam {

int64_t ContrastiveCropSchedule::scaled_renewal_count() const {
  // unscaled_renewal(k) <= scaled_from - 2, solved for k.
  if (scaled_from < 2) return 0;
  return std::max<int64_t>(0, (scaled_from - 2) / loc_interval - ceil_div(warmup_epochs, loc_interval) + 1);
}

int64_t ContrastiveCropSchedule::first_renewal_landing_from(int64_t epoch) const {
  // The requested run's renewals land in this one in order (in_this_run never decreases): bisect.
  int64_t lo = 0, hi = scaled_renewal_count();
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (in_this_run(unscaled_renewal(mid)) >= epoch) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

int64_t ContrastiveCropSchedule::next_renewal(int64_t from, int64_t epochs) const {
  from = std::max<int64_t>(from, 0);
  if (epochs < 2) return kNever;  // never after the run's last epoch
  if (!is_scaled()) {
    // The first multiple of L from max(from, W) on, if it comes before the run's last epoch.
    const int64_t multiple = ceil_div(std::max(from, warmup_epochs), loc_interval);
    return multiple <= (epochs - 2) / loc_interval ? multiple * loc_interval : kNever;
  }
  const int64_t k = first_renewal_landing_from(from);
  if (k == scaled_renewal_count()) return kNever;
  const int64_t e = in_this_run(unscaled_renewal(k));
  return e <= epochs - 2 ? e : kNever;
}

int64_t ContrastiveCropSchedule::renewals_between(int64_t first, int64_t last, int64_t epochs) const {
  first = std::max<int64_t>(first, 0);
  last = std::min(last, epochs - 2);  // never after the run's last epoch
  if (last < first) return 0;
  if (!is_scaled()) {
    return multiples_in(std::max(first, warmup_epochs), last, loc_interval);
  }
  // The requested run's renewals k_first..k_end-1 land in [first, last]. They land d = L * to /
  // from epochs apart before rounding: with d >= 1 each on its own epoch (round(x + d) >=
  // round(x) + 1); with d < 1 on every epoch from the first's to the last's (round(x + d) <=
  // round(x) + 1). Both up to the doubles' rounding of in_this_run, which costs the estimate this
  // serves (the budget's) nothing.
  const int64_t k_first = first_renewal_landing_from(first), k_end = first_renewal_landing_from(last + 1);
  if (k_first >= k_end) return 0;
  if (scaled_to > 0 && loc_interval >= ceil_div(scaled_from, scaled_to)) return k_end - k_first;  // d >= 1
  return in_this_run(unscaled_renewal(k_end - 1)) - in_this_run(unscaled_renewal(k_first)) + 1;
}

bool ContrastiveCropSchedule::same_from(const ContrastiveCropSchedule& other, int64_t epoch, int64_t epochs) const {
  const auto used_from = [&](const ContrastiveCropSchedule& s) { return std::max(s.first_epoch(), epoch); };
  if (used_from(*this) != used_from(other)) return false;
  if (*this == other) return true;
  // The renewals to come, compared one by one up to the first that differs.
  int64_t mine = next_renewal(epoch, epochs), theirs = other.next_renewal(epoch, epochs);
  while (mine == theirs && mine != kNever) {
    mine = next_renewal(mine + 1, epochs);
    theirs = other.next_renewal(theirs + 1, epochs);
  }
  return mine == theirs;
}

}  // namespace bam
