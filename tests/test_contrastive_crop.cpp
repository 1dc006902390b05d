// ContrastiveCrop: the Beta draws (moments and distribution), the crop placement of the official
// ContrastiveCrop.get_params, boxes read off attention maps against a direct transcription of the
// official update_box (the whole bilinear resize, then the first and last rows and columns above
// the threshold) and a hand-worked map, the renewal schedule of main_pretrain.py, locate_objects
// against the attention it reads, and a training run that renews its boxes with the teacher,
// keeps them in its checkpoints and resumes from them exactly (and refuses to resume without
// them where they would have been located), and runs fitted to a time budget that scale the
// schedule, or keep it when a refit comes too late. (The loader's side is in test_loader.cpp.)

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "bam/contrastive_crop.h"
#include "bam/trainer.h"
#include "data/augment.h"
#include "data/object_boxes.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/contrastive_crop_scan.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {

// The CDF of Beta(a, a) at x, by Simpson's rule on the integral with t = u^(1/a) (which removes
// the singularity at 0), and symmetry above 1/2.
double beta_cdf(double a, double x) {
  auto integral = [a](double upper) {  // of t^(a-1) (1-t)^(a-1) over [0, upper], upper <= 1/2
    const double top = std::pow(upper, a);
    const int n = 4000;
    auto f = [a](double u) { return std::pow(1 - std::pow(u, 1 / a), a - 1) / a; };
    double s = f(0) + f(top);
    for (int i = 1; i < n; ++i) s += (i % 2 ? 4 : 2) * f(top * i / n);
    return s * top / (3 * n);
  };
  const double half = integral(0.5);
  return x <= 0.5 ? integral(x) / (2 * half) : 1 - integral(1 - x) / (2 * half);
}

// The official computation, written out as it reads: the whole bilinear resize (PyTorch's
// upsample_bilinear2d, align_corners = false), then the rows and columns with a value above t.
data::ObjectBox official_box(const std::vector<float>& map, int g, int S, float t) {
  float lo = *std::min_element(map.begin(), map.end());
  std::vector<float> m(map.size());
  for (size_t i = 0; i < map.size(); ++i) m[i] = map[i] - lo;
  const float hi = *std::max_element(m.begin(), m.end());
  for (float& v : m) v /= hi + 1e-5f;
  auto source = [&](int dst, int* i0, int* i1, float* lambda) {
    float src = static_cast<float>(g) / static_cast<float>(S) * (dst + 0.5f) - 0.5f;
    if (src < 0) src = 0;
    *i0 = static_cast<int>(src);
    *i1 = *i0 < g - 1 ? *i0 + 1 : *i0;
    *lambda = src - *i0;
  };
  std::vector<float> up(static_cast<size_t>(S) * S);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      int y0, y1, x0, x1;
      float ly, lx;
      source(y, &y0, &y1, &ly);
      source(x, &x0, &x1, &lx);
      up[y * S + x] = (1 - ly) * ((1 - lx) * m[y0 * g + x0] + lx * m[y0 * g + x1]) +
                      ly * ((1 - lx) * m[y1 * g + x0] + lx * m[y1 * g + x1]);
    }
  std::vector<int> rows, cols;
  for (int y = 0; y < S; ++y) {
    float best = -1;
    for (int x = 0; x < S; ++x) best = std::max(best, up[y * S + x]);
    if (best > t) rows.push_back(y);
  }
  for (int x = 0; x < S; ++x) {
    float best = -1;
    for (int y = 0; y < S; ++y) best = std::max(best, up[y * S + x]);
    if (best > t) cols.push_back(x);
  }
  // Nothing above the threshold (the resized map's peak can fall below the map's, whose samples the
  // output grid may miss): the whole image, as box_from_attention documents.
  if (rows.empty() || cols.empty()) return data::ObjectBox{};
  const float s = static_cast<float>(S);
  return {rows.front() / s, cols.front() / s, rows.back() / s, cols.back() / s};
}

bool same_box(const data::ObjectBox& a, const data::ObjectBox& b) {
  return a.top == b.top && a.left == b.left && a.bottom == b.bottom && a.right == b.right;
}

std::string fresh_dir(const std::string& name) { return scratch_dir("ccrop/" + name).string(); }

std::vector<data::ObjectBox> boxes_of(const LoadedCheckpoint& ck) {
  REQUIRE(ck.object_boxes.defined());
  const std::vector<float> v = ck.object_boxes.to_vector<float>();
  std::vector<data::ObjectBox> out;
  for (size_t i = 0; i + 3 < v.size(); i += 4) out.push_back({v[i], v[i + 1], v[i + 2], v[i + 3]});
  return out;
}

// Passes everything through to a folder's data, and fails at batch `fail_at` (counted over the run):
// a crash in the middle of an epoch, after the checkpoint of the epoch before.
class FailingData : public PassThroughData {
 public:
  FailingData(std::unique_ptr<TrainData> inner, int64_t fail_at)
      : PassThroughData(std::move(inner)), fail_at_(fail_at) {}
  CropBatch next() override {
    if (taken_++ == fail_at_) fail("the machine went down");
    return PassThroughData::next();
  }

 private:
  int64_t fail_at_, taken_ = 0;
};

// A ContrastiveCrop run fitted to a 3-second budget, in the official proportions (--loc_interval
// 20 and --warmup_epochs 10 of --epochs 100, here ten times each, as these steps take
// milliseconds): the boxes are first located after 20 % of the run.
TrainConfig fitted_ccrop_config(const std::string& name, const std::string& folder) {
  TrainConfig c = small_train_config(fresh_dir(name));
  c.data_path = folder;
  c.num_workers = 2;
  c.use_ccrop = true;
  c.box_thresh = 0.5;
  c.epochs = 1000;
  c.warmup_epochs = 100;
  c.loc_interval = 200;
  c.time_budget_minutes = 0.05;
  c.fit_epochs_to_budget = true;
  return c;
}

// The epochs of the plan a run's message names ("... to the fitted 25: ..."); -1 without the message.
int64_t scaled_to(const std::string& out, const std::string& plan) {
  const std::string said = "ContrastiveCrop's schedule scaled from --epochs 1000 to " + plan + " ";
  const size_t at = out.find(said);
  return at == std::string::npos ? -1 : std::stoll(out.substr(at + said.size()));
}

}  // namespace

TEST_CASE("Beta(alpha, alpha) from the counter stream has the Beta's mean, variance and distribution") {
  const uint64_t seed = test_seed("beta draws");
  for (double alpha : {0.6, 1.0, 3.0}) {
    CAPTURE(alpha);
    const int n = 20000;
    std::vector<double> x(n);
    for (int i = 0; i < n; ++i)
      x[i] = data::beta_symmetric(alpha, [&](uint32_t k) {
        return data::augment_bits(seed, 0, static_cast<uint32_t>(i), 0, data::AugmentPurpose::placement, k);
      });
    double mean = 0, var = 0;
    for (double v : x) mean += v / n;
    for (double v : x) var += (v - mean) * (v - mean) / (n - 1);
    CHECK(std::abs(mean - 0.5) < 0.015);                         // over 6 standard errors
    CHECK(std::abs(var / (0.25 / (2 * alpha + 1)) - 1) < 0.05);  // Var = 1 / (4 (2a + 1))
    // Kolmogorov-Smirnov distance on a grid (0.0138 is the critical value at p = 0.001; uniform
    // draws would be 0.07 off for alpha = 0.6 and 0.1 for alpha = 3).
    std::sort(x.begin(), x.end());
    double worst = 0;
    for (double at = 0.05; at < 0.96; at += 0.05) {
      const double empirical = static_cast<double>(std::lower_bound(x.begin(), x.end(), at) - x.begin()) / n;
      worst = std::max(worst, std::abs(empirical - beta_cdf(alpha, at)));
    }
    CHECK(worst < 0.02);
    CHECK(x.front() > 0);
    CHECK(x.back() < 1);
  }
  // The numerical CDF itself: Beta(1, 1) is uniform; Beta(0.6, 0.6) puts more weight near the edges.
  CHECK(beta_cdf(1.0, 0.3) == doctest::Approx(0.3).epsilon(1e-6));
  CHECK(beta_cdf(0.6, 0.1) > 0.15);
}

TEST_CASE("ContrastiveCrop places crops as the official get_params: sizes and colours unchanged, corners in the box") {
  const uint64_t seed = test_seed("placement");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  data::AugmentRecipe recipe;
  recipe.local_crops = 6;
  int spread_rows = 0, fallbacks = 0;
  for (uint32_t image = 0; image < 200; ++image) {
    const int w = 60 + static_cast<int>(image * 37 % 300), h = 60 + static_cast<int>(image * 53 % 250);
    float a = u(rng), b = u(rng), c = u(rng), d = u(rng);
    const data::CropPlacement placement{{std::min(a, b), std::min(c, d), std::max(a, b), std::max(c, d)}, 0.6};
    for (uint32_t crop = 0; crop < 8; ++crop) {
      const data::CropParams plain = data::sample_crop(recipe, w, h, seed, 3, image, crop);
      const data::CropParams placed = data::sample_crop(recipe, w, h, seed, 3, image, crop, &placement);
      CHECK(placed.height == plain.height);
      CHECK(placed.width == plain.width);
      CHECK(placed.flip == plain.flip);
      CHECK(placed.brightness == plain.brightness);
      CHECK(placed.blur_sigma == plain.blur_sigma);
      CHECK(placed.solarize == plain.solarize);
      // No try fitted (an elongated image at a large scale): both take the same centred fallback.
      if (placed.top == (h - placed.height) / 2 && placed.left == (w - placed.width) / 2 && placed.top == plain.top &&
          placed.left == plain.left) {
        ++fallbacks;
        continue;
      }
      // The corner lies between the box's two edges less half the crop, clamped to the image.
      auto range = [](int extent, int size, float lo, float hi) {
        auto clamp = [&](int v) { return std::clamp(v, 0, extent - size); };
        return std::pair{clamp(static_cast<int>(extent * double{lo}) - size / 2),
                         clamp(static_cast<int>(extent * double{hi}) - size / 2)};
      };
      const auto [r0, r1] = range(h, placed.height, placement.box.top, placement.box.bottom);
      const auto [c0, c1] = range(w, placed.width, placement.box.left, placement.box.right);
      CHECK(placed.top >= r0);
      CHECK(placed.top <= r1);
      CHECK(placed.left >= c0);
      CHECK(placed.left <= c1);
      spread_rows += r1 > r0 && placed.top != r0 && placed.top != r1;
    }
  }
  CHECK(fallbacks < 40);
  CHECK(spread_rows > 100);  // the Beta draws do spread the crops across the box
  // A box of no extent centres every crop on its point.
  const data::CropPlacement point{{0.75f, 0.25f, 0.75f, 0.25f}, 0.6};
  for (uint32_t crop = 0; crop < 8; ++crop) {
    const data::CropParams p = data::sample_crop(recipe, 400, 300, seed, 0, 7, crop, &point);
    CHECK(p.top == std::clamp(225 - p.height / 2, 0, 300 - p.height));
    CHECK(p.left == std::clamp(100 - p.width / 2, 0, 400 - p.width));
  }
  // Global crops placed by a box draw their scale up to the whole image, as the official
  // DataAugmentationCCrop's (global_crops_scale[0], 1.), whatever --global_crops_scale's upper bound.
  data::AugmentRecipe capped = recipe;
  capped.global_scale_max = 0.5;
  double plain_largest = 0, placed_largest = 0;
  for (uint32_t image = 0; image < 200; ++image)
    for (uint32_t crop = 0; crop < 2; ++crop) {
      const data::CropParams plain = data::sample_crop(capped, 400, 300, seed, 0, image, crop);
      const data::CropParams placed = data::sample_crop(capped, 400, 300, seed, 0, image, crop, &point);
      plain_largest = std::max(plain_largest, plain.height * plain.width / 120000.0);
      placed_largest = std::max(placed_largest, placed.height * placed.width / 120000.0);
    }
  CHECK(plain_largest <= 0.5 + 0.01);
  CHECK(placed_largest > 0.8);

  // The boxes apply from their first epoch on, and every image needs one.
  data::ObjectBoxes boxes;
  boxes.first_epoch = 2;
  boxes.boxes.resize(3);
  CHECK(!boxes.placement(1, 0));
  CHECK(boxes.placement(2, 2));
  CHECK_THROWS_WITH_AS(boxes.placement(2, 3), doctest::Contains("image 3 has no box (3 boxes"), Error);
}

TEST_CASE("a box read off an attention map: the official update_box's, and a hand-worked one") {
  const uint64_t seed = test_seed("attention boxes");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  int differing = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const int g = 2 + trial % 13, S = g * (trial % 2 ? 16 : 7);
    const float t = 0.05f + 0.9f * u(rng);
    std::vector<float> map(static_cast<size_t>(g) * g);
    for (float& v : map) v = std::pow(u(rng), 4.0f) * 3;  // a few bright patches
    const data::ObjectBox got = data::box_from_attention(map.data(), g, g, S, t);
    CAPTURE(g);
    CAPTURE(S);
    CAPTURE(t);
    CHECK(same_box(got, official_box(map, g, S, t)));
    differing += !same_box(got, data::ObjectBox{});
  }
  CHECK(differing > 20);
  // One hot patch (row 1, column 2) of a 4 x 4 map at 28 px: its weight in an output row is the
  // bilinear tent around source row 1, above 0.1 for source positions (0.1, 1.9), i.e. output
  // rows 4 to 16 (source = (y + 0.5) / 7 - 0.5); columns (1.1, 2.9), i.e. 11 to 23.
  std::vector<float> hot(16, 0.0f);
  hot[1 * 4 + 2] = 5;
  const data::ObjectBox box = data::box_from_attention(hot.data(), 4, 4, 28, 0.1);
  CHECK(box.top == 4 / 28.0f);
  CHECK(box.bottom == 16 / 28.0f);
  CHECK(box.left == 11 / 28.0f);
  CHECK(box.right == 23 / 28.0f);
  // A flat map shows nothing: the whole image.
  std::vector<float> flat(16, 0.3f);
  CHECK(same_box(data::box_from_attention(flat.data(), 4, 4, 28, 0.1), data::ObjectBox{}));
}

TEST_CASE("the boxes are used and renewed on main_pretrain.py's epochs") {
  const int64_t none = std::numeric_limits<int64_t>::max();
  ContrastiveCropSchedule defaults{20, 10};  // --loc_interval 20, --warmup_epochs 10, 100 epochs
  CHECK(defaults.first_epoch() == 21);
  CHECK(defaults.first_renewal() == 20);
  for (int64_t e = 0; e < 100; ++e) {
    CAPTURE(e);
    CHECK(defaults.renews_after(e, 100) == (e == 20 || e == 40 || e == 60 || e == 80));
  }
  CHECK(defaults.known_until(0, 100) == 21);
  CHECK(defaults.known_until(20, 100) == 21);
  CHECK(defaults.known_until(21, 100) == 41);
  CHECK(defaults.known_until(81, 100) == none);
  CHECK(!defaults.renews_after(80, 81));  // never after the last epoch
  ContrastiveCropSchedule slurm{40, 40};  // scripts/pretrain/vit_small.slurm
  CHECK(slurm.first_epoch() == 41);
  CHECK(slurm.first_renewal() == 40);
  CHECK(slurm.renews_after(40, 400));
  CHECK(!slurm.renews_after(0, 400));
  ContrastiveCropSchedule late{20, 30};  // warm-up past the first interval: used from 31, renewed from 40
  CHECK(late.first_epoch() == 31);
  CHECK(late.first_renewal() == 40);
  CHECK(!late.renews_after(20, 100));
  ContrastiveCropSchedule every{1, 0};
  CHECK(every.first_epoch() == 2);
  CHECK(every.renews_after(0, 3));
  CHECK(every.renews_after(1, 3));
  CHECK(!every.renews_after(2, 3));
  CHECK(every.known_until(2, 3) == none);
  // Scaled to a fitted run's length: the renewals of --epochs 100 (after 20, 40, 60 and 80) at the
  // same fractions of the run, the boxes used from the epoch after the scaled max(L, W).
  const ContrastiveCropSchedule official{20, 10};
  auto renewals = [](const ContrastiveCropSchedule& s, int64_t epochs) {
    std::vector<int64_t> after;
    for (int64_t e = 0; e < epochs; ++e)
      if (s.renews_after(e, epochs)) after.push_back(e);
    return after;
  };
  const ContrastiveCropSchedule ten = official.scaled(100, 10);
  CHECK(renewals(ten, 10) == std::vector<int64_t>{2, 4, 6, 8});
  CHECK(ten.first_epoch() == 3);
  CHECK(ten.first_renewal() == 2);
  CHECK(ten.known_until(3, 10) == 5);
  // 3 epochs: 0.6, 1.2, 1.8 and 2.4 round to 1 and 2, and 2 is the last: one renewal, after epoch 1,
  // whose boxes epoch 2 uses (an interval and warm-up rounded apiece, 1 and 0, renewed after
  // epoch 0 too, for boxes no crop used).
  const ContrastiveCropSchedule three = official.scaled(100, 3);
  CHECK(renewals(three, 3) == std::vector<int64_t>{1});
  CHECK(three.first_epoch() == 2);
  // 7 epochs: 1.4, 2.8, 4.2, 5.6 → 1, 3, 4, 6 (the last): three, never more than the full run's four.
  CHECK(renewals(official.scaled(100, 7), 7) == std::vector<int64_t>{1, 3, 4});
  CHECK(renewals(official.scaled(100, 300), 300) == std::vector<int64_t>{60, 120, 180, 240});
  CHECK(official.scaled(100, 300).first_epoch() == 61);
  CHECK(renewals(official.scaled(100, 100), 100) == renewals(official, 100));
  CHECK(renewals(official.scaled(100, 1), 1).empty());
  // A warm-up past the interval (30 of 100, every 20: after 40, 60 and 80; used from 31): scaled to
  // 10, after 4, 6 and 8, used from 4.
  const ContrastiveCropSchedule late_scaled = ContrastiveCropSchedule{20, 30}.scaled(100, 10);
  CHECK(renewals(late_scaled, 10) == std::vector<int64_t>{4, 6, 8});
  CHECK(late_scaled.first_epoch() == 4);
  CHECK(late_scaled.first_renewal() == 4);
  // A requested run that never renews, nor uses, its boxes (10 epochs, from 9 every 9: 9 is its
  // last) scaled to 30 does neither: no whole-image boxes with Beta centres in its last epochs.
  const ContrastiveCropSchedule unused = ContrastiveCropSchedule{9, 9}.scaled(10, 30);
  CHECK(renewals(unused, 30).empty());
  CHECK(unused.first_epoch() == ContrastiveCropSchedule::kNever);
  CHECK(unused.first_renewal() == ContrastiveCropSchedule::kNever);
  CHECK(ContrastiveCropSchedule{1, 0}.scaled(1, 5).first_renewal() == ContrastiveCropSchedule::kNever);
  CHECK(renewals(ContrastiveCropSchedule{1, 0}.scaled(1, 5), 5).empty());

  // untouched_at, which lets the first refit scale the schedule again: true while training the
  // epoch after which the first renewal comes, false from the next (ten: after 2, used from 3).
  CHECK(ten.untouched_at(0));
  CHECK(ten.untouched_at(2));
  CHECK(!ten.untouched_at(3));
  // Used from epoch 4 and renewed after it (late_scaled): touched at 4 by the crops alone.
  CHECK(late_scaled.untouched_at(3));
  CHECK(!late_scaled.untouched_at(4));
  // Boxes used from 31 but never renewed (--epochs 18, from 15 every 10 scaled to 36): the use
  // alone decides.
  const ContrastiveCropSchedule used_only = ContrastiveCropSchedule{10, 15}.scaled(18, 36);
  REQUIRE(used_only.first_renewal() == ContrastiveCropSchedule::kNever);
  CHECK(used_only.first_epoch() == 31);
  CHECK(used_only.untouched_at(30));
  CHECK(!used_only.untouched_at(31));
  CHECK(unused.untouched_at(1000));  // neither: never touched
  // A rule of every epoch from 0 renews after epoch 0, so it is touched from epoch 1 on.
  CHECK(every.untouched_at(0));
  CHECK(!every.untouched_at(1));

  // same_from, which spares the loader's prepared batches when a refit's schedule tells it nothing
  // new. Other flags, the same epochs: used from 3, renewed after 2, 4, 6 and 8.
  const ContrastiveCropSchedule by_two{2, 2};
  CHECK(by_two.same_from(by_two, 0, 10));
  CHECK(by_two.same_from(ContrastiveCropSchedule{2, 1}, 0, 10));
  // Used from 5 and renewed after 4 and 8: another schedule, but not in the last epoch, which
  // renews nothing and uses the boxes under both.
  const ContrastiveCropSchedule by_four{4, 2};
  CHECK(!by_two.same_from(by_four, 0, 10));
  CHECK(!by_two.same_from(by_four, 5, 10));  // the renewal after 6
  CHECK(by_two.same_from(by_four, 9, 10));
  // Two scalings whose boxes would first place crops in epochs 5 and 6, never renewed: in a run of
  // 5 epochs neither is used yet, but they differ all the same, as a later refit can lengthen the
  // run to 6 and the loader would then place epoch 5's crops by the schedule it was last told.
  const ContrastiveCropSchedule to_four = ContrastiveCropSchedule{10, 18}.scaled(20, 4),
                                to_five = ContrastiveCropSchedule{10, 18}.scaled(20, 5);
  REQUIRE(to_four.first_epoch() == 5);
  REQUIRE(to_five.first_epoch() == 6);
  REQUIRE(to_five.first_renewal() == ContrastiveCropSchedule::kNever);
  CHECK(!to_five.same_from(to_four, 0, 5));
  CHECK(!to_five.same_from(to_four, 0, 6));
  CHECK(to_five.same_from(to_five.scaled(20, 5), 0, 5));
  // Both used from before `epoch`: the same from there on.
  CHECK(to_five.same_from(to_four, 7, 9));
}

TEST_CASE("the schedule's jumps (next_renewal, renewals_between, same_from) agree with a scan of every epoch") {
  // The reference is the scan of tests/contrastive_crop_scan.h.
  std::vector<ContrastiveCropSchedule> schedules;
  for (int64_t L : {1, 2, 3, 7, 20})
    for (int64_t W : {0, 1, 5, 10, 30}) {
      schedules.push_back({L, W});
      for (int64_t from : {1, 2, 10, 37, 100})
        for (int64_t to : {1, 3, 7, 10, 36, 300}) schedules.push_back(ContrastiveCropSchedule{L, W}.scaled(from, to));
    }
  int64_t renewals_seen = 0;
  for (const ContrastiveCropSchedule& s : schedules) {
    CAPTURE(s.loc_interval);
    CAPTURE(s.warmup_epochs);
    CAPTURE(s.scaled_from);
    CAPTURE(s.scaled_to);
    for (int64_t epochs : {1, 2, 5, 13, 60, 301}) {
      CAPTURE(epochs);
      std::vector<int64_t> after;  // the epochs the scan renews after
      for (int64_t e = 0; e < epochs; ++e)
        if (scanned_renews_after(s, e, epochs)) after.push_back(e);
      renewals_seen += static_cast<int64_t>(after.size());
      CHECK(s.next_renewal(-3, epochs) == s.next_renewal(0, epochs));  // (before the run: from its start)
      CHECK(s.renewals_between(-3, epochs + 3, epochs) == static_cast<int64_t>(after.size()));
      for (int64_t from = 0; from <= epochs; ++from) {
        CAPTURE(from);
        const auto next = std::lower_bound(after.begin(), after.end(), from);
        REQUIRE(s.next_renewal(from, epochs) == (next == after.end() ? ContrastiveCropSchedule::kNever : *next));
        if (from < epochs) CHECK(s.renews_after(from, epochs) == std::binary_search(after.begin(), after.end(), from));
        for (int64_t last : {from, from + 1, from + 6, epochs - 1, epochs + 5}) {
          const auto count =
              std::count_if(after.begin(), after.end(), [&](int64_t e) { return e >= from && e <= last; });
          CHECK(s.renewals_between(from, last, epochs) == count);
        }
      }
    }
  }
  CHECK(renewals_seen > 10000);
  // same_from over pairs of the scaled schedules, against the scan of the epochs to come.
  for (size_t a = 0; a < schedules.size(); a += 7)
    for (size_t b = 0; b < schedules.size(); b += 11)
      for (int64_t epoch : {0, 3, 9})
        for (int64_t epochs : {10, 40}) {
          bool same = std::max(schedules[a].first_epoch(), epoch) == std::max(schedules[b].first_epoch(), epoch);
          for (int64_t e = epoch; e < epochs && same; ++e)
            same = scanned_renews_after(schedules[a], e, epochs) == scanned_renews_after(schedules[b], e, epochs);
          CHECK(schedules[a].same_from(schedules[b], epoch, epochs) == same);
        }
  // A billion epochs: counted, not scanned (the old scan took seconds per call).
  const ContrastiveCropSchedule official{20, 10};
  CHECK(official.renewals_between(0, 999'999'999, 1'000'000'000) == 49'999'999);  // 20, 40, ..., 999,999,980
  CHECK(official.next_renewal(999'999'981, 1'000'000'000) == ContrastiveCropSchedule::kNever);
  CHECK(official.same_from(official, 0, 1'000'000'000));
  // Flags as large as a user may pass (an interval meaning "never"): no overflow, the rule's answer.
  const int64_t huge = std::numeric_limits<int64_t>::max();
  const ContrastiveCropSchedule never{huge, 0};
  CHECK(never.next_renewal(0, 100) == 0);  // epoch 0 is a multiple of any interval
  CHECK(never.next_renewal(1, 100) == ContrastiveCropSchedule::kNever);
  CHECK(never.renewals_between(0, 98, 100) == 1);
  CHECK(ContrastiveCropSchedule{huge, 5}.next_renewal(0, 100) == ContrastiveCropSchedule::kNever);
  CHECK(ContrastiveCropSchedule{huge, 5}.scaled(1'000'000'000, 10).renewals_between(0, 9, 10) == 0);
  CHECK(ContrastiveCropSchedule{7, 0}.scaled(huge, 10).next_renewal(0, 10) == 0);
}

TEST_CASE("locate_objects reads the CLS attention of the last block of each whole image, in dataset order") {
  const std::string root = write_colour_folder("ccrop/locate", 2, 7, 4);
  data::Dataset d = data::open_dataset(root);
  Generator gen(test_seed("locate objects"));
  VisionTransformer vit(tiny_vit_config(4, 16), &gen);
  vit.train(false);
  const ObjectLocatorOptions o = small_locator_options(16, 0.9);
  const std::vector<data::ObjectBox> boxes = locate_objects(vit, d, o);
  REQUIRE(static_cast<int64_t>(boxes.size()) == d.size());
  int smaller = 0;
  // The reference runs the images in the batches locate_objects forms (o.batch_size, in dataset
  // order): the GEMMs of another batch size may add in another order, and an untrained model's
  // nearly flat maps put some patches within a rounding of the 0.9 threshold, where one ulp moves a
  // box edge.
  for (int64_t first = 0; first < d.size(); first += o.batch_size) {
    const int64_t n = std::min<int64_t>(o.batch_size, d.size() - first);
    Tensor x = empty({n, 3, 16, 16});
    for (int64_t j = 0; j < n; ++j) {
      const data::DecodedImage image = data::decode_image_file(d.files[first + j]);
      data::render_crop(image, data::whole_image_params(image.width, image.height, 16), o.recipe,
                        x.data<float>() + j * 3 * 16 * 16);
    }
    Tensor probs = vit.last_attention(x);  // [n, heads, 17, 17]
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = first + j;
      CAPTURE(i);
      std::vector<float> map(16, 0.0f);
      for (int h = 0; h < 2; ++h)
        for (int p = 0; p < 16; ++p) map[p] += probs.select(0, j).select(0, h).select(0, 0).to_vector<float>()[1 + p];
      const data::ObjectBox want = data::box_from_attention(map.data(), 4, 4, 16, 0.9);
      CHECK(boxes[i].top == doctest::Approx(want.top));
      CHECK(boxes[i].left == doctest::Approx(want.left));
      CHECK(boxes[i].bottom == doctest::Approx(want.bottom));
      CHECK(boxes[i].right == doctest::Approx(want.right));
      smaller += !same_box(boxes[i], data::ObjectBox{});
    }
  }
  CHECK(smaller > 0);
}

TEST_CASE("a ContrastiveCrop run renews its boxes with the teacher, keeps them in checkpoints and resumes exactly") {
  const std::string folder = write_colour_folder("ccrop/images", 4, 16, 8);
  auto config = [&](const std::string& name) {
    TrainConfig c = small_train_config(fresh_dir(name));
    c.data_path = folder;
    c.num_workers = 2;
    c.teacher = true;
    c.use_ccrop = true;
    c.loc_interval = 1;
    c.warmup_epochs = 0;
    c.box_thresh = 0.5;
    c.saveckp_freq = 1;
    c.teacher_m = 0.5;  // a teacher that follows the student, so that its boxes move between renewals
    return c;
  };
  const TrainConfig full = config("full");
  TrainResult reference = Trainer(full, make_train_data(full)).run();
  REQUIRE(reference.step_losses.size() == 12);  // 3 epochs of 4 steps
  // Renewed after epochs 0 and 1, not after the last; log.txt says so.
  REQUIRE(reference.epochs.size() == 3);
  CHECK(reference.epochs[0].box_area > 0);
  CHECK(reference.epochs[0].box_area < 0.95);
  CHECK(reference.epochs[1].box_area > 0);
  CHECK(reference.epochs[2].box_area < 0);
  std::ifstream log(full.output_dir + "/log.txt");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(log, line);) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 3);
  CHECK(rows[1].at("ccrop_box_area") == reference.epochs[1].box_area);
  CHECK(!rows[2].contains("ccrop_box_area"));
  std::ifstream report(full.output_dir + "/report.html");
  const std::string html((std::istreambuf_iterator<char>(report)), {});
  CHECK(html.find("mean object-box area") != std::string::npos);
  CHECK(html.find("Green: the object box ContrastiveCrop reads off") != std::string::npos);

  // checkpoint0001 is written after the renewal that follows epoch 1: its boxes are what its own
  // teacher locates (in eval mode, at --global_crops_size, --box_thresh).
  const LoadedCheckpoint after1 = load_checkpoint(full.output_dir + "/checkpoint0001.safetensors");
  {
    Generator gen(0);
    BamModel teacher(full.vit(), full.projector(), &gen);
    teacher.load_state(after1.teacher);
    teacher.train(false);
    ObjectLocatorOptions o;
    o.image_size = 16;
    o.threshold = 0.5;
    const std::vector<data::ObjectBox> located = locate_objects(*teacher.backbone, data::open_dataset(folder), o);
    const std::vector<data::ObjectBox> saved = boxes_of(after1);
    REQUIRE(saved.size() == located.size());
    for (size_t i = 0; i < saved.size(); ++i) CHECK(same_box(saved[i], located[i]));
  }
  // The boxes of epoch 0's renewal differ from epoch 1's for some image (the teacher moved).
  const std::vector<data::ObjectBox> renewed0 =
      boxes_of(load_checkpoint(full.output_dir + "/checkpoint0000.safetensors"));
  CHECK(std::equal(renewed0.begin(), renewed0.end(), boxes_of(after1).begin(), same_box) == false);

  // A crash in epoch 2 (whose crops the boxes place), then a resume: the same losses bit for bit.
  const TrainConfig crashed = config("crashed");
  CHECK_THROWS_WITH_AS(Trainer(crashed, std::make_unique<FailingData>(make_train_data(crashed), 9)).run(),
                       doctest::Contains("the machine went down"), Error);
  TrainResult rest = Trainer(crashed, make_train_data(crashed)).run();
  CHECK(rest.resumed);
  REQUIRE(rest.step_losses.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(rest.step_losses[i] == reference.step_losses[8 + i]);
  }
  // Resuming over another folder: the boxes do not fit it, and the error says so.
  const std::string other = write_colour_folder("ccrop/other", 3, 16, 9);
  TrainConfig moved = config("moved");
  std::filesystem::copy_file(full.output_dir + "/checkpoint0001.safetensors",
                             moved.output_dir + "/checkpoint.safetensors");
  moved.data_path = other;
  CHECK_THROWS_WITH_AS(Trainer(moved, make_train_data(moved)).run(),
                       doctest::Contains("ccrop.boxes holds 64 ContrastiveCrop boxes, but --data_path"), Error);
  // A run without ContrastiveCrop, resumed with it past the epoch its boxes would first have been
  // located after: refused, as the official script refuses it.
  TrainConfig plain = config("plain");
  plain.use_ccrop = false;
  plain.max_steps = 5;  // stops in epoch 1
  Trainer(plain, make_train_data(plain)).run();
  plain.use_ccrop = true;
  plain.max_steps = 0;
  CHECK_THROWS_WITH_AS(Trainer(plain, make_train_data(plain)).run(),
                       doctest::Contains("the checkpoint holds no ContrastiveCrop boxes"), Error);
}

// A run fitted to a time budget keeps --epochs' proportions in ContrastiveCrop's schedule: with
// the official proportions (--loc_interval 20 and --warmup_epochs 10 of --epochs 100, here ten
// times each, as these steps take milliseconds) and a fit of some tens of epochs, the boxes are
// renewed at most four times, at the same fractions of the run (unscaled, a fitted run shorter
// than the first renewal never located a box). The first refit scales it again, from its own
// plan; a resume keeps the checkpoint's scale.
TEST_CASE("a ContrastiveCrop run fitted to a budget scales its box schedule with the run, and a resume keeps it") {
  const std::string folder = write_colour_folder("ccrop/fit_images", 4, 16, 10);
  auto config = [&](const std::string& name) { return fitted_ccrop_config(name, folder); };
  const TrainConfig full = config("fit_full");
  TrainResult r;
  const std::string out = stdout_of([&] { r = Trainer(full, make_train_data(full)).run(); });
  const int64_t fitted = scaled_to(out, "the fitted"), refitted = scaled_to(out, "the refitted plan's");
  CAPTURE(fitted);
  CAPTURE(refitted);
  REQUIRE(fitted >= 3);  // a budget of 3 s holds tens of these epochs
  REQUIRE(fitted < 1000);
  const LoadedCheckpoint ck = load_checkpoint(full.output_dir + "/checkpoint.safetensors");
  CHECK(ck.config.loc_interval == 200);  // the flags stay as given
  CHECK(ck.config.warmup_epochs == 100);
  CHECK(ck.config.ccrop_scaled_from_epochs == 1000);
  CHECK(ck.config.ccrop_scaled_to_epochs == (refitted > 0 ? refitted : fitted));
  // The epochs run renewed the boxes where the saved schedule says, for the run's final length
  // (the later refits move its end).
  const ContrastiveCropSchedule schedule = ck.config.ccrop_schedule();
  int renewals = 0;
  for (size_t e = 0; e < r.epochs.size(); ++e) {
    CAPTURE(e);
    const bool renewed = schedule.renews_after(static_cast<int64_t>(e), ck.config.epochs);
    CHECK((r.epochs[e].box_area >= 0) == renewed);
    renewals += renewed;
  }
  CHECK(renewals >= 1);
  CHECK(renewals <= 4);

  // Stopped in epoch 1 (after the calibration's 4 batches and epoch 0's 4), before the first
  // refit, then resumed with the flags as given: the checkpoint's scale stays.
  const TrainConfig crashed = config("fit_crashed");
  const std::string crashed_out = stdout_of([&] {
    CHECK_THROWS_WITH_AS(Trainer(crashed, std::make_unique<FailingData>(make_train_data(crashed), 10)).run(),
                         doctest::Contains("the machine went down"), Error);
  });
  REQUIRE(scaled_to(crashed_out, "the fitted") >= 3);
  const LoadedCheckpoint stopped = load_checkpoint(crashed.output_dir + "/checkpoint.safetensors");
  REQUIRE(stopped.state.epoch == 1);
  CHECK(stopped.config.ccrop_scaled_to_epochs == scaled_to(crashed_out, "the fitted"));
  Trainer(crashed, make_train_data(crashed)).run();
  const LoadedCheckpoint resumed = load_checkpoint(crashed.output_dir + "/checkpoint.safetensors");
  CHECK(resumed.state.global_step > stopped.state.global_step);
  CHECK(resumed.config.ccrop_scaled_from_epochs == 1000);
  CHECK(resumed.config.ccrop_scaled_to_epochs == stopped.config.ccrop_scaled_to_epochs);
}

// The first refit scales the schedule again only while neither the schedule in use nor the new one
// has acted on the run. Here the calibration's 4 batches take 15 ms more each (so that it fits
// fewer than 200 steps and the first refit comes at step 9, in epoch 2, on any machine), and the
// next ones 170 ms more: by the first refit the budget leaves only a few epochs, scaled to which the
// boxes would already have been located after epoch 0 or 1. The schedule stays scaled to the
// calibration's plan, and the run says so.
TEST_CASE("a first refit whose rescaled box schedule would already have acted keeps the fitted one, saying so") {
  if (kUnderThreadSanitizer) {
    MESSAGE("skipped under ThreadSanitizer: its slow steps, not the injected delays, would set the fit");
    return;
  }
  TrainConfig c = fitted_ccrop_config("fit_refused", write_colour_folder("ccrop/refused_images", 4, 16, 10));
  c.time_budget_minutes = 0.06;  // 3.6 s
  const std::string out =
      stdout_of([&] { Trainer(c, std::make_unique<ChangingSpeedData>(make_train_data(c), 15, 170, 4)).run(); });
  const int64_t fitted = scaled_to(out, "the fitted");
  CAPTURE(out);
  REQUIRE(fitted >= 8);  // untouched at the first refit's epoch: the boxes first located after 2 or more
  CHECK(out.find(fmt::format("(ContrastiveCrop's schedule stays scaled to {} epochs: scaled to the refitted plan's ",
                             fitted)) != std::string::npos);
  CHECK(scaled_to(out, "the refitted plan's") == -1);
  CHECK(load_checkpoint(c.output_dir + "/checkpoint.safetensors").config.ccrop_scaled_to_epochs == fitted);
}

}  // namespace bam::test
