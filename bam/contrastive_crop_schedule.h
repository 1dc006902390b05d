// When ContrastiveCrop renews its object boxes and from which epoch the crops use them: the
// official main_pretrain.py rule, and the same rule scaled to a run fitted to a time budget.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace bam {

// ceil(a / m) for a >= 0 and m > 0, with no overflow for any of them (a flag may be huge).
inline int64_t ceil_div(int64_t a, int64_t m) { return a / m + (a % m != 0); }
// How many multiples of m (> 0) lie in [lo, hi], for 0 <= lo: epochs counted, not scanned (here
// and in budget_fit.cpp).
inline int64_t multiples_in(int64_t lo, int64_t hi, int64_t m) { return hi < lo ? 0 : hi / m - ceil_div(lo, m) + 1; }

// The official rule, with --loc_interval L and --warmup_epochs W: crops use the boxes from epoch
// max(L, W) + 1 on; the boxes are renewed after every epoch e >= W with e % L == 0, except the
// run's last (they start as the whole image).
//
// A run fitted to a time budget (scaled_from > 0) keeps the proportions of the run it was asked
// for, of scaled_from (--epochs) epochs, in its scaled_to: each renewal of the requested run (but
// after its last epoch) comes at the same fraction of this run's length, rounded to an epoch (two
// that round to one epoch are one renewal), and the boxes are used from the epoch after the
// scaled max(L, W). The renewals of a longer fit are never fewer, and never more than the
// requested run's.
struct ContrastiveCropSchedule {
  int64_t loc_interval = 20, warmup_epochs = 10;
  int64_t scaled_from = 0, scaled_to = 0;  // 0: the flags' own schedule

  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  bool operator==(const ContrastiveCropSchedule&) const = default;
  bool is_scaled() const { return scaled_from > 0; }
  // The first epoch whose crops the boxes place (kNever: the requested run ends first).
  int64_t first_epoch() const {
    const int64_t e = std::max(loc_interval, warmup_epochs);
    if (is_scaled() && e + 1 >= scaled_from) return kNever;
    return in_this_run(e) + 1;
  }
  // The first epoch after which they may be renewed: the first multiple of L from W on (scaled;
  // kNever: the requested run renews none).
  int64_t first_renewal() const {
    const int64_t e = unscaled_renewal(0);
    if (is_scaled() && e >= scaled_from - 1) return kNever;
    return in_this_run(e);
  }
  // The first epoch from `from` on after which a run of `epochs` epochs renews the boxes (kNever:
  // none). Computed, never scanned epoch by epoch: a run may be asked for a billion epochs, and
  // the trainer asks at every logged step. Epochs past the run's last renew nothing.
  int64_t next_renewal(int64_t from, int64_t epochs) const;
  bool renews_after(int64_t epoch, int64_t epochs) const { return next_renewal(epoch, epochs) == epoch; }
  // How many of the epochs first..last of a run of `epochs` epochs the boxes are renewed after.
  int64_t renewals_between(int64_t first, int64_t last, int64_t epochs) const;
  // Whether a run training `epoch` has not acted on this schedule yet (so it may still take
  // another): no renewal after an epoch before this one, and no crop of this one placed by the boxes.
  bool untouched_at(int64_t epoch) const { return first_renewal() >= epoch && first_epoch() > epoch; }
  // Whether this schedule and `other` tell a run of `epochs` epochs the same from `epoch` on: the
  // first epoch whose crops the boxes place (any at or before `epoch` is the same; past the run's
  // end, not: a later refit can lengthen the run, and the loader places crops by that epoch
  // itself), and each renewal to come (the trainer decides those again at every epoch's end).
  bool same_from(const ContrastiveCropSchedule& other, int64_t epoch, int64_t epochs) const;
  // This schedule in a run of `to_epochs` fitted from one of `from_epochs` (--epochs).
  ContrastiveCropSchedule scaled(int64_t from_epochs, int64_t to_epochs) const {
    return {loc_interval, warmup_epochs, from_epochs, to_epochs};
  }
  // The first epoch whose boxes are not known while training `epoch`: the one after the next
  // renewal from `epoch` on (none within the run's `epochs`: the largest number).
  int64_t known_until(int64_t epoch, int64_t epochs) const {
    const int64_t e = next_renewal(epoch, epochs);
    return e == kNever ? kNever : e + 1;
  }

 private:
  // The epoch after which the flags' schedule renews for the k-th time (k >= 0).
  int64_t unscaled_renewal(int64_t k) const { return (ceil_div(warmup_epochs, loc_interval) + k) * loc_interval; }
  // How many renewals the requested run of a scaled schedule has (those before its last epoch).
  int64_t scaled_renewal_count() const;
  // The first k in [0, scaled_renewal_count()) whose renewal lands in this run at or after
  // `epoch` (scaled_renewal_count(): none).
  int64_t first_renewal_landing_from(int64_t epoch) const;
  // Epoch e of the requested run in this one.
  int64_t in_this_run(int64_t e) const {
    if (!is_scaled()) return e;
    return std::llround(static_cast<double>(e) * static_cast<double>(scaled_to) / static_cast<double>(scaled_from));
  }
};

}  // namespace bam
