// The Trainer's resume and checkpoints: what a checkpoint must agree with before training goes on
// from it (the architecture, the global batch, the images, every rank's weights), the flags it
// notes as changed, and what a save writes.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "bam/trainer.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/safetensors.h"

namespace bam {

void check_resumable(const TrainConfig& saved, const TrainConfig& current, const std::string& path) {
  if (auto flag = architecture_mismatch(saved, current))
    fail("{}: the checkpoint was trained with a different {}; resume with the same value or use a new --output_dir",
         path, *flag);
  // The schedule, the data order and the learning rate follow the global batch alone: any split of
  // it over processes continues the same run (rank r of W takes the images at r*B of each one).
  const int64_t saved_global = saved.batch_size_per_gpu * saved.world_size;
  const int64_t global = current.batch_size_per_gpu * current.world_size;
  if (saved_global != global) {
    const std::string keep =
        saved_global % current.world_size == 0
            ? fmt::format("; keep {} images with --batch_size_per_gpu {} on {} process{}", saved_global,
                          saved_global / current.world_size, current.world_size, current.world_size > 1 ? "es" : "")
            : std::string();
    fail(
        "{}: the checkpoint's run took global batches of {} images ({} process{} x --batch_size_per_gpu {}); "
        "resuming with {} ({} x {}) would change the schedule{}",
        path, saved_global, saved.world_size, saved.world_size > 1 ? "es" : "", saved.batch_size_per_gpu, global,
        current.world_size, current.batch_size_per_gpu, keep);
  }
}

void check_resumable_early(const TrainConfig& current, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  TrainConfig saved;
  try {
    const std::map<std::string, std::string> metadata = load_safetensors_metadata(path);
    if (!metadata.count("bam_checkpoint") || !metadata.count("args")) return;
    saved = TrainConfig::from_json(nlohmann::json::parse(metadata.at("args")));
    saved.validate_stored();
  } catch (const std::exception&) {
    return;  // the whole load says what is wrong, in its place
  }
  check_resumable(saved, current, path);
}

void Trainer::resume_if_possible(TrainResult& result) {
  if (!std::filesystem::exists(checkpoint_path())) return;
  LoadedCheckpoint ck = load_checkpoint(checkpoint_path());
  check_resumable(ck.config, config_, checkpoint_path());
  if (ck.config.world_size != config_.world_size)
    std::printf("Resuming a run of %lld process%s x %lld images as %lld x %lld: the same global batch\n",
                static_cast<long long>(ck.config.world_size), ck.config.world_size > 1 ? "es" : "",
                static_cast<long long>(ck.config.batch_size_per_gpu), static_cast<long long>(config_.world_size),
                static_cast<long long>(config_.batch_size_per_gpu));
  if (ck.config.fit_epochs_to_budget) {
    // A finished fitted run is not extended by a new budget (its learning rate has decayed to the
    // end): rather than train nothing and report the old model as this budget's, say so.
    const bool complete = ck.config.max_steps > 0 && ck.state.global_step >= ck.config.max_steps;
    BAM_CHECK(
        !complete || config_.time_budget_minutes <= 0 || config_.time_budget_minutes == ck.config.time_budget_minutes,
        "{}: the checkpoint's run is complete, its {} steps fitted to --time_budget_minutes {}; this run asks "
        "for --time_budget_minutes {}, and a finished schedule is not extended: train anew in another "
        "--output_dir (scripts/run.sh: --fresh)",
        checkpoint_path(), ck.config.max_steps, ck.config.time_budget_minutes, config_.time_budget_minutes);
    // The schedule was fitted when the run started; keep it rather than fitting again (and say so
    // in this run's checkpoints, so that a later resume keeps it too). The fit leaves
    // --warmup_epochs and --loc_interval as given (they place ContrastiveCrop's schedule) and
    // bounds --reg_warmup_epochs by the fitted epochs: a request for others is not followed, and
    // is said (the schedule's length and warm-up steps are the fit's own, asked for by no flag).
    std::string kept, asked;
    const auto differs = [&](const char* flag, int64_t saved, int64_t requested) {
      if (saved == requested) return;
      kept += fmt::format(" --{} {}", flag, saved);
      asked += fmt::format(" --{} {}", flag, requested);
    };
    differs("warmup_epochs", ck.config.warmup_epochs, config_.warmup_epochs);
    differs("loc_interval", ck.config.loc_interval, config_.loc_interval);
    differs("reg_warmup_epochs", ck.config.reg_warmup_epochs, std::min(config_.reg_warmup_epochs, ck.config.epochs));
    if (!kept.empty())
      std::printf(
          "note: the checkpoint's run was fitted to a budget, and its schedule is kept as fitted, with%s; this "
          "run's%s are not followed (train anew in another --output_dir to fit them)\n",
          kept.c_str(), asked.c_str());
    config_.fit_epochs_to_budget = true;
    config_.epochs = ck.config.epochs;
    config_.max_steps = ck.config.max_steps;
    config_.warmup_steps = ck.config.warmup_steps;
    config_.warmup_epochs = ck.config.warmup_epochs;  // with the next three, ContrastiveCrop's schedule
    config_.loc_interval = ck.config.loc_interval;
    config_.ccrop_scaled_from_epochs = ck.config.ccrop_scaled_from_epochs;
    config_.ccrop_scaled_to_epochs = ck.config.ccrop_scaled_to_epochs;
    config_.reg_warmup_epochs = ck.config.reg_warmup_epochs;
    build_schedules();
  } else if (config_.fit_epochs_to_budget) {
    // A run that was not fitted is not fitted now (its schedule is under way): it goes on with the
    // flags given, and its checkpoints must not claim a fit that later resumes would keep.
    std::printf(
        "note: --fit_epochs_to_budget true: the checkpoint's run was not fitted to a budget, and a schedule under "
        "way is not refitted; this run goes on with --epochs %lld%s\n",
        static_cast<long long>(config_.epochs),
        config_.time_budget_minutes > 0 ? " and stops when --time_budget_minutes is spent" : "");
    config_.fit_epochs_to_budget = false;
  }
  BAM_CHECK(ck.state.step_in_epoch < data_->steps_per_epoch(),
            "{}: the checkpoint is {} steps into an epoch, but --data_path {} makes epochs of {} steps (fewer images "
            "than the checkpoint's run?); resume with its images or use a new --output_dir",
            checkpoint_path(), ck.state.step_in_epoch, config_.data_path, data_->steps_per_epoch());
  BAM_CHECK(teacher_ || ck.teacher.empty(), "{}: holds teacher weights, but this run has no teacher",
            checkpoint_path());
  try {
    student_->load_state(ck.student);
    if (teacher_) teacher_->load_state(ck.teacher);
    optimizer_->load_state(ck.optimizer, ck.state.optimizer_steps);
  } catch (const Error& e) {
    fail("{}: {}", checkpoint_path(), e.what());
  }
  // fp16: continue from the saved loss scale instead of backing off from 2^16 again.
  if (scaler_.enabled() && ck.state.loss_scale > 0)
    scaler_.load_state(ck.state.loss_scale, ck.state.loss_scale_clean_steps);
  state_ = ck.state;
  step_in_epoch_ = ck.state.step_in_epoch;
  if (step_in_epoch_ > 0 && !ck.state.epoch_so_far.empty()) {
    try {
      epoch_sums_ = EpochSums::from_json(ck.state.epoch_so_far);
    } catch (const std::exception& e) {
      fail("{}: corrupt checkpoint metadata: epoch_so_far: {}", checkpoint_path(), e.what());
    }
  }
  if (config_.use_ccrop && !ck.object_boxes.defined()) {
    // The boxes would have been located by now: starting them over from the whole image would
    // crop differently from the run the checkpoint continues (the official script refuses too).
    const ContrastiveCropSchedule now = config_.ccrop_schedule();  // this run's flags (and fit)
    BAM_CHECK(ck.state.epoch <= now.first_renewal(),
              "{}: --use_ccrop true, but the checkpoint holds no ContrastiveCrop boxes (its run did not use them) and "
              "is {} epochs in, past the epoch after which they are first located ({}); resume with --use_ccrop false "
              "or use a new --output_dir",
              checkpoint_path(), ck.state.epoch, now.first_renewal());
  }
  note_changed_recipe(ck.config);
  if (ck.config.use_ccrop != config_.use_ccrop || ck.config.loc_interval != config_.loc_interval ||
      ck.config.ccrop_alpha != config_.ccrop_alpha || ck.config.box_thresh != config_.box_thresh ||
      ck.config.box_image_size() != config_.box_image_size())
    std::printf(
        "note: the checkpoint's run used --use_ccrop %s --loc_interval %lld --ccrop_alpha %g --box_thresh %g "
        "--ccrop_img_size %lld; this run's ContrastiveCrop settings differ, and its crops follow them from here "
        "on\n",
        ck.config.use_ccrop ? "true" : "false", static_cast<long long>(ck.config.loc_interval), ck.config.ccrop_alpha,
        ck.config.box_thresh, static_cast<long long>(ck.config.box_image_size()));
  if (config_.use_ccrop && ck.object_boxes.defined()) {
    const int64_t n = data_->images()->size();
    BAM_CHECK(ck.object_boxes.dim() == 2 && ck.object_boxes.size(0) == n && ck.object_boxes.size(1) == 4 &&
                  ck.object_boxes.dtype() == DType::f32,
              "{}: ccrop.boxes holds {} ContrastiveCrop boxes, but --data_path {} has {} images; resume with the same "
              "images or use a new --output_dir",
              checkpoint_path(), ck.object_boxes.dim() == 2 ? ck.object_boxes.size(0) : -1, config_.data_path, n);
    resumed_boxes_ = data::boxes_from_tensor(ck.object_boxes);
  }
  // Epochs of another length (more or fewer images at an epoch's end): the schedules are indexed
  // by epoch and step in it, and would jump ahead or back from the checkpoint's step. (Checkpoints
  // of older versions, which record no image count, closed an epoch that --max_steps cut short:
  // their steps need not add up, and they resume as before.)
  const int64_t steps = data_->steps_per_epoch();
  if (ck.state.num_images > 0 && ck.state.num_images != data_->num_images() && ck.state.epoch > 0 &&
      ck.state.global_step != ck.state.epoch * steps + ck.state.step_in_epoch)
    fail(
        "{}: the checkpoint's run took {} steps in {} epoch{} (epochs of {} steps), but --data_path {} makes epochs "
        "of {} steps (another number of images?): its learning-rate and weight-decay schedules would jump; resume "
        "with its images or use a new --output_dir",
        checkpoint_path(), ck.state.global_step, ck.state.epoch, ck.state.epoch == 1 ? "" : "s",
        (ck.state.global_step - ck.state.step_in_epoch) / ck.state.epoch, config_.data_path, steps);
  // Other images under the same --data_path (a folder that grew) with as many steps an epoch: the
  // run goes on, but not as the uninterrupted one would (each epoch's order is drawn over the images).
  if (ck.state.num_images > 0 && ck.state.num_images != data_->num_images())
    std::printf(
        "note: --data_path %s has %lld training images, the checkpoint's run had %lld: the epochs from here on "
        "visit them in another order than that run would have%s\n",
        config_.data_path.c_str(), static_cast<long long>(data_->num_images()),
        static_cast<long long>(ck.state.num_images),
        ck.state.step_in_epoch > 0 ? ", and the epoch in progress may visit some images twice and others not at all"
                                   : "");
  result.resumed = true;
  trim_logs_to_checkpoint();  // once the checkpoint is accepted
  std::printf("Resumed from %s: %lld steps done (epoch %lld, step %lld of %lld)%s\n", checkpoint_path().c_str(),
              static_cast<long long>(state_.global_step), static_cast<long long>(state_.epoch),
              static_cast<long long>(step_in_epoch_), static_cast<long long>(data_->steps_per_epoch()),
              state_.global_step >= total_steps_ ? "; the schedule is complete" : "");
}

void Trainer::note_changed_recipe(const TrainConfig& saved) const {
  // Flags that may differ without changing what is trained (where, how fast, what is logged), and
  // those checked or noted elsewhere: the architecture (refused), the batch split, the schedule's
  // length (a longer one is how a finished run goes on), ContrastiveCrop's settings.
  static const std::set<std::string> elsewhere = {"device",
                                                  "num_workers",
                                                  "data_backend",
                                                  "output_dir",
                                                  "saveckp_freq",
                                                  "knn_freq",
                                                  "knn_train_path",
                                                  "knn_val_path",
                                                  "knn_train_fraction",
                                                  "knn_eval_fraction",
                                                  "eval_resize_ratio",
                                                  "eval_first",
                                                  "log_freq",
                                                  "time_budget_minutes",
                                                  "fit_epochs_to_budget",
                                                  "ccrop_scaled_from_epochs",
                                                  "ccrop_scaled_to_epochs",
                                                  "world_size",
                                                  "batch_size_per_gpu",
                                                  "epochs",
                                                  "max_steps",
                                                  "warmup_epochs",
                                                  "warmup_steps",
                                                  "reg_warmup_epochs",
                                                  "grad_checkpointing",
                                                  "use_ccrop",
                                                  "loc_interval",
                                                  "ccrop_alpha",
                                                  "box_thresh",
                                                  "ccrop_img_size"};
  const nlohmann::ordered_json before = saved.to_json(), now = config_.to_json();
  std::string was, is;
  for (const auto& [key, value] : now.items()) {
    if (elsewhere.count(key) || !before.contains(key) || before.at(key) == value) continue;
    was += fmt::format(" --{} {}", key, before.at(key).dump());
    is += fmt::format(" --{} {}", key, value.dump());
  }
  if (!was.empty())
    std::printf(
        "note: the checkpoint's run had%s; this run goes on with%s (a resume repeats the uninterrupted "
        "run only with its flags)\n",
        was.c_str(), is.c_str());
}

void Trainer::check_ranks_agree() {
  if (!group_) return;
  // The flags first: ranks that differ in one would call the collectives with different sizes,
  // which NCCL cannot detect. All of them but the device and the data backend (where the crops are
  // made), which are each rank's own.
  const nlohmann::ordered_json config = config_.to_json();  // items() must not outlive it
  std::vector<std::pair<std::string, std::string>> flags;
  for (const auto& [key, value] : config.items())
    if (key != "device" && key != "data_backend") flags.emplace_back("--" + key, value.dump());
  bam::check_ranks_agree(*group_, flags, "flags",
                         "every rank needs the same flags but for --device and --data_backend (--precision auto "
                         "resolves on each rank's device: give it explicitly to ranks on different devices)");
  // The same images too: the same flags can name other files on another machine (a node's own
  // copy, a relative --data_path), and the ranks' batches would then be of other images.
  // Names within the folder: the folder itself may be mounted elsewhere on each machine.
  const data::Dataset* d = data_->images();
  const std::string images = d ? data::dataset_listing(*d) : std::to_string(data_->num_images()) + " images";
  bam::check_ranks_agree(*group_, images, "images",
                         "every rank must read the same --data_path files (a shared folder, or copies at the same "
                         "path)");
  // The step and a sum over every weight, from rank 0 to all; each rank compares its own.
  const double checksum = weight_checksum(student_->parameters());
  Tensor mine = empty({2}, {DType::f64, Device::cpu()});
  mine.data<double>()[0] = static_cast<double>(state_.global_step);
  mine.data<double>()[1] = checksum;
  Tensor root = mine.clone();
  group_->broadcast(root);
  std::string problem;
  if (root.data<double>()[0] != mine.data<double>()[0] || root.data<double>()[1] != mine.data<double>()[1])
    problem = fmt::format(
        "rank {} starts at step {} with weight sum {:.9g}, rank 0 at step {} with {:.9g}: every rank must read the "
        "same --output_dir (a shared folder) and be built with the same flags",
        config_.rank, state_.global_step, checksum, static_cast<int64_t>(root.data<double>()[0]),
        root.data<double>()[1]);
  // Rank 0 stops too, naming the rank (it went on, and was stopped by its watcher saying only that
  // a peer had gone).
  fail_if_any_rank(*group_, problem,
                   "another rank starts from other weights or another step than rank 0 (see its error): every rank "
                   "must read the same --output_dir (a shared folder) and be built with the same flags");
}

void Trainer::save(const std::string& path) {
  if (!writes_files()) return;
  state_.optimizer_steps = optimizer_->steps();
  state_.step_in_epoch = step_in_epoch_;
  state_.num_images = data_->num_images();
  state_.epoch_so_far = step_in_epoch_ > 0 ? epoch_sums_.to_json() : std::string();
  state_.loss_scale = scaler_.enabled() ? scaler_.scale() : 0.0;
  state_.loss_scale_clean_steps = scaler_.enabled() ? scaler_.clean_steps() : 0;
  Tensor boxes;
  if (object_boxes_) boxes = data::boxes_to_tensor(object_boxes_->boxes);
  save_checkpoint(path, config_, state_, *student_, teacher_.get(), *optimizer_, boxes);
}

std::string Trainer::EpochSums::to_json() const {
  nlohmann::ordered_json j;
  j["steps"] = steps;
  j["loss"] = loss;
  j["target_entropy"] = target_entropy;
  j["embedding_std"] = embedding_std;
  j["lr"] = lr;
  j["wd"] = wd;
  j["data_wait_s"] = data_wait_s;
  j["host_waits"] = host_waits;
  j["seconds"] = seconds;
  j["reg"] = reg;
  return j.dump();
}

Trainer::EpochSums Trainer::EpochSums::from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text);
  EpochSums s;
  s.steps = j.at("steps").get<int64_t>();
  s.loss = j.at("loss").get<double>();
  s.target_entropy = j.at("target_entropy").get<double>();
  s.embedding_std = j.at("embedding_std").get<double>();
  s.lr = j.at("lr").get<double>();
  s.wd = j.at("wd").get<double>();
  s.data_wait_s = j.at("data_wait_s").get<double>();
  s.host_waits = j.at("host_waits").get<double>();
  s.seconds = j.at("seconds").get<double>();
  s.reg = j.value("reg", -1.0);  // (absent from older checkpoints)
  BAM_CHECK(s.steps >= 0 && s.seconds >= 0, "negative steps or seconds: {}", text);
  return s;
}

}  // namespace bam
