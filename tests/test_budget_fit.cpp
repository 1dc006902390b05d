// The time budget's arithmetic (bam/budget_fit.h) on hand-counted cases: the steps left, the
// epoch ends they reach (saves, numbered saves, kNN evaluations after every k-th epoch and after
// the last, ContrastiveCrop's box updates, scaled with the run at the first fit), a fit that
// starts mid-run, in an odd epoch or at an epoch's last step; and when the refits come and what
// the first one changes.
#include <limits>

#include "bam/budget_fit.h"
#include "tests/contrastive_crop_scan.h"
#include "tests/support.h"

namespace bam::test {

TEST_CASE("seconds_to_finish counts the steps and each epoch end as the trainer runs them") {
  EpochEndWork w;
  w.steps_per_epoch = 10;
  // Steps alone.
  CHECK(seconds_to_finish(w, 1.0, 0, 25) == 25.0);
  CHECK(seconds_to_finish(w, 1.0, 7, 25) == 18.0);
  // A save after each epoch the steps reach: 0, 1 and 2 for 25 steps.
  w.save_seconds = 100;
  CHECK(seconds_to_finish(w, 1.0, 0, 25) == 25.0 + 300);
  // Numbered saves on epochs 0 and 2 (--saveckp_freq 2).
  w.saveckp_freq = 2;
  CHECK(seconds_to_finish(w, 1.0, 0, 25) == 25.0 + 300 + 200);
  w.saveckp_freq = 0;
  w.save_seconds = 0;
  // kNN every 2 epochs: after epochs 1, 3, ... and after the last.
  w.knn_freq = 2;
  w.knn_seconds = 1000;
  CHECK(seconds_to_finish(w, 1.0, 0, 40) == 40.0 + 2000);  // after 1 and 3
  CHECK(seconds_to_finish(w, 1.0, 0, 50) == 50.0 + 3000);  // after 1, 3 and 4 (the last)
  // From inside epoch 3 to the end of epoch 4: after 3 (the second) and 4 (the last). Counting
  // ceil(epochs / 2) from epoch 3 finds one; the trainer runs two.
  CHECK(seconds_to_finish(w, 1.0, 35, 50) == 15.0 + 2000);
  // From inside epoch 4 to inside epoch 5: after 5 alone (the last; 4 is neither).
  CHECK(seconds_to_finish(w, 1.0, 45, 53) == 8.0 + 1000);
  // A fit at epoch 3's last step (40 steps done): epoch 3's evaluation is still to come.
  CHECK(seconds_to_finish(w, 1.0, 40, 50) == 10.0 + 2000);
  // ContrastiveCrop: boxes renewed after epochs 2 and 4 (from W = 2, every L = 2), never after the
  // last one.
  w.knn_freq = 0;
  w.box_updates = ContrastiveCropSchedule{2, 2};
  w.box_update_seconds = 10000;
  CHECK(seconds_to_finish(w, 1.0, 0, 60) == 60.0 + 20000);  // epochs 0-5: after 2 and 4
  CHECK(seconds_to_finish(w, 1.0, 0, 50) == 50.0 + 10000);  // epochs 0-4: 4 is the last
  // The first fit's schedule, --loc_interval 20 and --warmup_epochs 10 of --epochs 100 (renewals
  // after 20, 40, 60 and 80), scaled to each count's epochs: 10 epochs renew after 2, 4, 6 and 8; 5
  // after 1, 2 and 3 (4 is the last); 30 after 6, 12, 18 and 24.
  w.box_updates = ContrastiveCropSchedule{20, 10};
  w.box_schedule_epochs = 100;
  CHECK(seconds_to_finish(w, 1.0, 0, 100) == 100.0 + 40000);
  CHECK(seconds_to_finish(w, 1.0, 0, 50) == 50.0 + 30000);
  CHECK(seconds_to_finish(w, 1.0, 0, 300) == 300.0 + 40000);
  CHECK(seconds_to_finish(w, 1.0, 0, 10) == 10.0);  // one epoch: the last, no update
  // A longer run never costs less, so that steps_within's bisection finds the longest that fits.
  for (int64_t total = 2; total <= 3000; ++total) {
    CAPTURE(total);
    REQUIRE(seconds_to_finish(w, 1.0, 0, total) >= seconds_to_finish(w, 1.0, 0, total - 1));
  }
  // Unscaled, 10 epochs of that schedule renew nothing (the first would follow epoch 20).
  w.box_schedule_epochs = 0;
  CHECK(seconds_to_finish(w, 1.0, 0, 100) == 100.0);
}

TEST_CASE("seconds_to_finish, counted, equals the sum over every epoch end; a billion epochs cost nothing") {
  // The reference: each epoch end from the first still to come to the run's last, as the trainer
  // meets them.
  const auto summed = [](const EpochEndWork& w, double step_seconds, int64_t from_step, int64_t total) {
    const int64_t first = from_step > 0 ? (from_step - 1) / w.steps_per_epoch : 0;
    const int64_t last = (total - 1) / w.steps_per_epoch;
    double t = static_cast<double>(total - from_step) * step_seconds;
    std::optional<ContrastiveCropSchedule> boxes = w.box_updates;
    if (boxes && w.box_schedule_epochs > 0) boxes = boxes->scaled(w.box_schedule_epochs, last + 1);
    for (int64_t e = first; e <= last; ++e) {
      t += w.save_seconds;
      if (w.saveckp_freq > 0 && e % w.saveckp_freq == 0) t += w.save_seconds;
      if (w.knn_freq > 0 && ((e + 1) % w.knn_freq == 0 || e == last)) t += w.knn_seconds;
      if (boxes && scanned_renews_after(*boxes, e, last + 1)) t += w.box_update_seconds;
    }
    return t;
  };
  int checked = 0;
  for (int64_t per_epoch : {1, 3, 10})
    for (int64_t saveckp : {0, 1, 4})
      for (int64_t knn : {0, 1, 3})
        for (int boxes = 0; boxes < 3; ++boxes) {
          EpochEndWork w;
          w.steps_per_epoch = per_epoch;
          w.saveckp_freq = saveckp;
          w.knn_freq = knn;
          w.save_seconds = 100;
          w.knn_seconds = 10000;
          w.box_update_seconds = 1e6;
          if (boxes > 0) w.box_updates = ContrastiveCropSchedule{3, 2};
          if (boxes == 2) w.box_schedule_epochs = 17;
          for (int64_t from = 0; from < 40; from += 3)
            for (int64_t total = from + 1; total < from + 45; total += 2) {
              CAPTURE(per_epoch);
              CAPTURE(saveckp);
              CAPTURE(knn);
              CAPTURE(boxes);
              CAPTURE(from);
              CAPTURE(total);
              CHECK(seconds_to_finish(w, 1.0, from, total) == summed(w, 1.0, from, total));
              ++checked;
            }
        }
  CHECK(checked == 81 * 14 * 22);
  // Nothing left, or less than nothing: no epoch end counted twice, none from before the start.
  EpochEndWork every;
  every.steps_per_epoch = 4;
  every.knn_freq = 1;
  every.knn_seconds = 10;
  CHECK(seconds_to_finish(every, 1.0, 8, 8) == summed(every, 1.0, 8, 8));  // epoch 1's end still to come
  CHECK(seconds_to_finish(every, 1.0, 9, 8) == -1.0);                      // (the steps alone: no epoch from 2 to 1)
  // Frequencies as large as a flag may be: "never", with no overflow (and the last epoch's kNN).
  every.knn_freq = std::numeric_limits<int64_t>::max();
  every.saveckp_freq = std::numeric_limits<int64_t>::max();
  every.save_seconds = 100;
  CHECK(seconds_to_finish(every, 1.0, 0, 40) == 40.0 + 10 * 100 + 100 + 10);  // numbered save: epoch 0
  // --epochs 1000000000 of one step, a save after each and a numbered one every 20th, kNN every
  // 10th, ContrastiveCrop's default schedule: asked at every logged step, so it must not scan.
  EpochEndWork w;
  w.steps_per_epoch = 1;
  w.saveckp_freq = 20;
  w.knn_freq = 10;
  w.box_updates = ContrastiveCropSchedule{20, 10};
  w.save_seconds = 1;
  w.knn_seconds = 1000;
  w.box_update_seconds = 1e6;
  const int64_t epochs = 1'000'000'000;
  CHECK(seconds_to_finish(w, 0.0, 0, epochs) == double(epochs) + 5e7 + 1e8 * 1000 + (5e7 - 1) * 1e6);
}

TEST_CASE("steps_within finds the most steps that fit, at least one") {
  EpochEndWork w;
  w.steps_per_epoch = 10;
  w.knn_freq = 2;
  w.knn_seconds = 5;
  // From step 35: totals up to 50 end in epoch 4 and pay two evaluations (after 3 and 4); 51 and
  // on reach epoch 5, whose end pays the second instead of 4's, one step more.
  CHECK(steps_within(w, 25.0, 1.0, 35) == 50);
  CHECK(steps_within(w, 24.9, 1.0, 35) == 49);
  CHECK(steps_within(w, 26.0, 1.0, 35) == 51);
  // No time left: one step.
  CHECK(steps_within(w, -3.0, 1.0, 35) == 36);
  // No epoch-end work: seconds / step time.
  w.knn_freq = 0;
  CHECK(steps_within(w, 100.0, 0.25, 0) == 400);
}

TEST_CASE("refits: the first early in the warm-up, then a twentieth of its plan apart, none past the end") {
  // A long plan: the first refit at a twentieth, capped at 60, timing the steps after 20.
  const RefitPlan first = first_refit_plan(10000);
  CHECK(first.at_step == 60);
  CHECK(first.window_start == 20);
  CHECK(!first.first_done());
  // Its refit (at step 60) made the plan 8000 steps: the next ones every 400, the window kept.
  const RefitPlan second = next_refit_plan(first, 60, 8000);
  CHECK(second.interval == 400);
  CHECK(second.at_step == 460);
  CHECK(second.window_start == 20);
  // The interval stays the first refit's, whatever the later plans.
  const RefitPlan third = next_refit_plan(second, 460, 20000);
  CHECK(third.interval == 400);
  CHECK(third.at_step == 860);
  // One that would come at or past the plan's end is not planned.
  CHECK(next_refit_plan(second, 7700, 8000).at_step == -1);
  CHECK(next_refit_plan(second, 7599, 8000).at_step == 7999);
  // A short plan: the first refit no earlier than step 9 (and the interval at least its step); a
  // plan of 9 steps or fewer has none.
  CHECK(first_refit_plan(100).at_step == 9);
  CHECK(first_refit_plan(100).window_start == 3);
  CHECK(next_refit_plan(first_refit_plan(100), 9, 100).interval == 9);
  CHECK(first_refit_plan(10).at_step == 9);
  CHECK(first_refit_plan(9).at_step == -1);
  CHECK(first_refit_plan(1).at_step == -1);
}

TEST_CASE("refits: only the first restarts the warm-up, and only while it runs") {
  const RefitPlan first = first_refit_plan(10000);
  CHECK(refit_restarts_warmup(first, 60, 1000));  // 60 steps into a 1000-step warm-up
  // A short plan's warm-up (10 % of 50 steps) ended before the first refit at step 9: a refit to a
  // longer plan does not start it again.
  CHECK(!refit_restarts_warmup(first_refit_plan(50), 9, 5));
  CHECK(!refit_restarts_warmup(first_refit_plan(50), 9, 9));
  // The later refits never do.
  CHECK(!refit_restarts_warmup(next_refit_plan(first, 60, 10000), 560, 1000));
}

}  // namespace bam::test
