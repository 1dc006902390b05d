// The Trainer's ContrastiveCrop duties: the boxes the loader places crops by, their renewal from
// the model's attention (shared over the ranks of a data-parallel run), what a renewal costs when
// fitting a time budget and the schedule's scaling to the fitted run, and the plan printed at start.
#include <cstdio>
#include <string>

#include "bam/folder_data.h"
#include "bam/trainer.h"
#include "engine/distributed.h"
#include "engine/error.h"

namespace bam {

void Trainer::use_object_boxes(std::vector<data::ObjectBox> boxes, int64_t epoch) {
  auto b = std::make_shared<data::ObjectBoxes>();
  b->alpha = config_.ccrop_alpha;
  const ContrastiveCropSchedule schedule = config_.ccrop_schedule();
  b->first_epoch = schedule.first_epoch();
  b->until_epoch = schedule.known_until(epoch, epochs_in_schedule());
  b->boxes = std::move(boxes);
  object_boxes_ = b;
  data_->set_object_boxes(object_boxes_);
}

std::vector<data::ObjectBox> Trainer::locate_objects_in(const data::Dataset& images) {
  BamModel& model = teacher_ ? *teacher_ : *student_;  // the official script locates with the teacher
  ObjectLocatorOptions o;
  o.image_size = config_.box_image_size();
  o.threshold = config_.box_thresh;
  o.threads = static_cast<int>(std::max<int64_t>(1, config_.num_workers));
  o.recipe = recipe_from_config(config_);
  o.backend = config_.data_backend == "gpu" ? data::DataBackend::gpu : data::DataBackend::cpu;
  model.train(false);
  std::vector<data::ObjectBox> boxes;
  try {
    boxes = locate_objects(*model.backbone, images, o);
  } catch (...) {
    model.train(true);
    throw;
  }
  model.train(true);
  return boxes;
}

void Trainer::renew_object_boxes(int64_t epoch, EpochStats* stats) {
  auto start = Clock::now();
  std::vector<data::ObjectBox> boxes;
  if (!group_) {
    boxes = locate_objects_in(*data_->images());
  } else {
    // Data parallelism: each rank locates the boxes of its part of the images, with the model all
    // ranks hold, and gathers everyone's: the table one process would locate, on every rank.
    const std::vector<data::ObjectBox> mine =
        locate_objects_in(data::contiguous_part(*data_->images(), config_.rank, config_.world_size));
    boxes = data::boxes_from_tensor(all_gather_varying_rows(data::boxes_to_tensor(mine), *group_));
    BAM_CHECK(static_cast<int64_t>(boxes.size()) == data_->images()->size(),
              "ContrastiveCrop: the ranks located {} boxes for {} images", boxes.size(), data_->images()->size());
  }
  double area = 0;
  for (const data::ObjectBox& b : boxes) area += (b.bottom - b.top) * (b.right - b.left);
  stats->box_area = boxes.empty() ? 0 : area / static_cast<double>(boxes.size());
  use_object_boxes(std::move(boxes), epoch + 1);
  stats->box_seconds = seconds_since(start);
  std::printf(
      "ContrastiveCrop: boxes located after epoch %lld from the %s's attention in %.1f s: %.1f%% of the "
      "image on average\n",
      static_cast<long long>(epoch), teacher_ ? "teacher" : "student", stats->box_seconds, 100 * stats->box_area);
}

void Trainer::renew_boxes_left_by_stop() {
  const int64_t epoch = state_.boxes_due_after_epoch;
  EpochStats located;
  renew_object_boxes(epoch, &located);  // the weights the epoch ended with, as the stopped run had them
  box_update_seconds_.add(located.box_seconds);
  // The epoch's row, which the stopped run left unwritten (restore_lost_epoch_row writes it), gets
  // the update's figures. (The checkpoint saved with the update due holds that epoch's row.)
  if (!state_.last_epoch_row.empty()) add_to_last_epoch_row(located);
  state_.boxes_due_after_epoch = -1;
  save_timed(checkpoint_path());  // a stop from here on needs no second update
  std::printf("ContrastiveCrop: the box update after epoch %lld, which the stopped run left, is done\n",
              static_cast<long long>(epoch));
}

double Trainer::measure_box_update_seconds() {
  // Images spread evenly over the folder. A box update has a fixed cost (a loader and its
  // threads, the first kernels) and one per image: two timed samples (after a warm-up) give both,
  // and a pass over N images costs fixed + per image x N.
  const data::Dataset& all = *data_->images();
  auto spread = [&](int64_t m) {
    data::Dataset sample;
    sample.root = all.root;
    for (int64_t k = 0; k < m; ++k) {
      sample.files.push_back(all.files[static_cast<size_t>(k * all.size() / m)]);
      sample.labels.push_back(-1);
    }
    return sample;
  };
  auto time_of = [&](const data::Dataset& images) {
    auto start = Clock::now();
    locate_objects_in(images);
    return seconds_since(start);
  };
  // With several ranks each locates a part; the largest part takes the longest.
  const int64_t world = config_.world_size, part = (all.size() + world - 1) / world;
  const int64_t small = std::min<int64_t>(part, 64), large = std::min<int64_t>(part, 256);
  time_of(spread(std::min<int64_t>(small, 8)));  // warm-up
  const double t_small = time_of(spread(small));
  if (large == small) return t_small * static_cast<double>(part) / static_cast<double>(small);
  const double t_large = time_of(spread(large));
  const double per_image = std::max(0.0, (t_large - t_small) / static_cast<double>(large - small));
  const double fixed = std::max(0.0, t_small - per_image * static_cast<double>(small));
  return fixed + per_image * static_cast<double>(part);
}

std::string Trainer::box_renewals_text() const {
  const ContrastiveCropSchedule schedule = config_.ccrop_schedule();
  std::string renewals;  // the first few renewals to come
  int listed = 0;
  for (int64_t e = schedule.next_renewal(state_.epoch, epochs_in_schedule());
       e != ContrastiveCropSchedule::kNever && listed < 4; e = schedule.next_renewal(e + 1, epochs_in_schedule())) {
    if (listed > 0) renewals += ", ";
    renewals += ++listed == 4 ? std::string("...") : std::to_string(e);
  }
  return renewals.empty() ? "(none in this run)" : renewals;
}

void Trainer::print_contrastive_crop_plan(bool resumed_boxes) const {
  const ContrastiveCropSchedule schedule = config_.ccrop_schedule();
  const std::string rule =
      schedule.is_scaled()
          ? fmt::format("the renewals of --epochs {} from --warmup_epochs on, every --loc_interval, scaled to {}",
                        schedule.scaled_from, schedule.scaled_to)
          : std::string("from --warmup_epochs on, every --loc_interval");
  std::printf(
      "ContrastiveCrop: crops placed by object boxes (Beta(%g) centres) %s; the boxes (%s) are located from the "
      "%s's attention at %lld px after epochs %s (%s, not after the last)\n",
      config_.ccrop_alpha, box_use_text().c_str(), resumed_boxes ? "from the checkpoint" : "the whole image so far",
      teacher_ ? "teacher" : "student", static_cast<long long>(config_.box_image_size()), box_renewals_text().c_str(),
      rule.c_str());
  std::fflush(stdout);
}

std::string Trainer::box_use_text() const {
  const int64_t first = config_.ccrop_schedule().first_epoch();
  return first < epochs_in_schedule() ? fmt::format("from epoch {} on", first) : std::string("in no epoch of this run");
}

bool Trainer::box_schedule_scalable() const {
  return config_.ccrop_scaled_from_epochs > 0 && config_.ccrop_schedule().untouched_at(state_.epoch);
}

void Trainer::use_box_schedule(const ContrastiveCropSchedule& schedule, const char* plan) {
  const ContrastiveCropSchedule before = config_.ccrop_schedule();
  config_.ccrop_scaled_from_epochs = schedule.scaled_from;
  config_.ccrop_scaled_to_epochs = schedule.scaled_to;
  if (!config_.use_ccrop) return;
  // What the loader is told changes only with the first epoch the boxes place crops in or a
  // renewal to come; otherwise its prepared batches stay.
  if (schedule.same_from(before, state_.epoch, epochs_in_schedule())) return;
  std::printf(
      "ContrastiveCrop's schedule scaled from --epochs %lld to %s %lld: its box updates at the same fractions of "
      "the run, after epochs %s, and crops placed by the boxes %s\n",
      static_cast<long long>(schedule.scaled_from), plan, static_cast<long long>(schedule.scaled_to),
      box_renewals_text().c_str(), box_use_text().c_str());
  std::fflush(stdout);
  use_object_boxes(object_boxes_->boxes, state_.epoch);  // the whole images still, placed by the new schedule
}

}  // namespace bam
