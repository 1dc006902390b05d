// The training loop and its bookkeeping.
#include "bam/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "bam/bam_loss.h"
#include "bam/budget_fit.h"
#include "bam/output_dir.h"
#include "bam/report.h"
#include "bam/schedules.h"
#include "engine/atomic_file.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/random.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm.h"

namespace bam {
namespace {

std::string duration_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = static_cast<int64_t>(seconds);
  return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
}

// The collapse monitor: per-dimension std of the L2-normalised embeddings, averaged, times
// sqrt(D). About 1 for embeddings spread over the sphere, 0 for a collapsed model. A one-element
// tensor on z's device: computing it does not make the host wait. With a process group, over
// every rank's rows (their sums and sums of squares added up).
Tensor embedding_std(const Tensor& z, Communicator* group) {
  NoGradGuard no_grad;
  Tensor zn = l2_normalize(z.detach().to(DType::f32), 1);
  const double root_d = std::sqrt(static_cast<double>(z.size(1)));
  if (!group) return mul(mean(sqrt(var(zn, {0}, false))), root_d);
  Tensor z64 = zn.to(DType::f64);
  Tensor sums = cat({sum(z64, {0}, true), sum(square(z64), {0}, true)}, 0).contiguous();  // [2, D]
  group->all_reduce_sum(sums);
  const double n = static_cast<double>(z.size(0) * group->world_size());
  Tensor mean_z = div(sums.narrow(0, 0, 1), n);
  Tensor variance = clamp_min(sub(div(sums.narrow(0, 1, 1), n), square(mean_z)), 0.0);
  return mul(mean(sqrt(variance)), root_d).to(DType::f32);
}

// The step's numbers the host needs, read back together (read_scalars): on a GPU this is the
// step's one wait. grad_sum_of_squares (fp16's overflow check, GradScaler::unscale_queued) is 0
// when undefined.
struct StepMetrics {
  double loss, target_entropy, embedding_std, grad_sum_of_squares;
};
StepMetrics read_step_metrics(const Tensor& loss, const Tensor& entropy, const Tensor& spread,
                              const Tensor& grad_sum_of_squares) {
  std::vector<Tensor> values = {loss, entropy, spread};
  if (grad_sum_of_squares.defined()) values.push_back(grad_sum_of_squares);
  const std::vector<double> v = read_scalars(values);
  return {v[0], v[1], v[2], v.size() > 3 ? v[3] : 0.0};
}

}  // namespace

double Trainer::seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Trainer::Trainer(const TrainConfig& config, std::unique_ptr<TrainData> data, KnnMonitor knn)
    : config_(config), data_(std::move(data)), knn_(std::move(knn)) {
  config_.validate();
  if (config_.world_size > 1) {
    group_ = process_group();
    BAM_CHECK(group_ && group_->world_size() == config_.world_size && group_->rank() == config_.rank,
              "trainer: rank {} of {} needs the process group of the run (set_process_group)", config_.rank,
              config_.world_size);
  }
  BAM_CHECK(parse_device(config_.device, &device_), "--device: bad value '{}'", config_.device);
  BAM_CHECK(device_.is_cpu() || cuda::is_available(), "--device {}: {}", config_.device, cuda::unavailable_reason());
  if (device_.is_cuda()) cuda::select_device(device_.index);  // the process's device (engine/cuda.h)
  // On the CPU, bf16 autocast means bf16 GEMM operands (engine/ops_linalg.cpp); validate() refused fp16 there.
  compute_dtype_ = precision_dtype(config_.precision);
  scaler_ = GradScaler(compute_dtype_ == DType::f16);
  BAM_CHECK(data_->steps_per_epoch() >= 1, "--batch_size_per_gpu {} is larger than the {} training images",
            config_.batch_size_per_gpu, data_->num_images());
  Generator init(static_cast<uint64_t>(config_.seed));
  student_ = std::make_unique<BamModel>(config_.vit(), config_.projector(), &init);
  if (config_.teacher) {
    teacher_ = std::make_unique<BamModel>(config_.vit(), config_.projector(), &init);
    teacher_->load_state(student_->state());
    for (auto& [name, p] : teacher_->named_parameters()) Tensor(p).requires_grad_(false);
  }
  // Models are built (and seeded) on the CPU, then moved: the same initial weights on any device.
  student_->to(device_);
  if (teacher_) teacher_->to(device_);
  optimizer_ = make_optimizer(config_.optimizer, make_param_groups(student_->named_parameters()));
  BAM_CHECK(!config_.use_ccrop || data_->images(),
            "--use_ccrop true needs an image folder as --data_path: {} has no images to locate objects in",
            data_->describe());
  build_schedules();
}

void Trainer::build_schedules() {
  const int64_t steps = data_->steps_per_epoch();
  // Linear scaling rule: the base learning rate is given for a (global) batch of 256.
  const double base_lr = config_.lr * static_cast<double>(config_.batch_size_per_gpu * config_.world_size) / 256.0;
  total_steps_ = config_.max_steps > 0 ? std::min(config_.max_steps, config_.epochs * steps) : config_.epochs * steps;
  const int64_t warmup = config_.warmup_steps > 0 ? config_.warmup_steps : config_.warmup_epochs * steps;
  lr_schedule_ = cosine_schedule_steps(base_lr, config_.min_lr, total_steps_, warmup);
  wd_schedule_ = cosine_schedule_steps(config_.weight_decay, config_.weight_decay_end, total_steps_, 0);
  momentum_schedule_ = cosine_schedule_steps(config_.teacher_m, 1.0, total_steps_, 0);
  data_->set_epochs(epochs_in_schedule());  // the loader runs on into each next epoch up to here
}

int64_t Trainer::epochs_in_schedule() const {
  const int64_t steps = data_->steps_per_epoch();
  return (total_steps_ + steps - 1) / steps;
}

double Trainer::measure_step_seconds() {
  Generator init(static_cast<uint64_t>(config_.seed) + 1);
  BamModel model(config_.vit(), config_.projector(), &init);
  model.to(device_);
  auto optimizer = make_optimizer(config_.optimizer, make_param_groups(model.named_parameters()));
  optimizer->set_lr(0.0);  // the copy only has to cost what a real step costs
  BamLossOptions o;
  o.n_global = config_.global_crops_number;
  o.n_local = config_.local_crops_number;
  o.target_crops = config_.target_crops();
  o.top_k = config_.top_k_sink;
  const int steps = static_cast<int>(std::min<int64_t>(6, data_->steps_per_epoch()));
  data_->start_epoch(0, 0);
  Clock::time_point start;
  for (int i = 0; i < steps; ++i) {
    if (i == std::min(2, steps - 1)) {  // the first steps warm caches up
      if (device_.is_cuda()) cuda::synchronize();  // and are not timed
      start = Clock::now();
    }
    CropBatch batch = data_->next();
    for (Tensor& g : batch.groups) g = g.to(device_);
    Tensor z;
    {
      AutocastGuard autocast(compute_dtype_);
      z = model.forward(batch.groups);
    }
    // With several ranks, the collectives too: the loss across ranks and the gradients' sum.
    BamLossResult out =
        group_ ? bam_loss_across_ranks(z, config_.reg, o, Tensor(), *group_) : bam_loss(z, config_.reg, o);
    optimizer->zero_grad();
    out.loss.backward();
    if (group_) sum_gradients_over_ranks(model.parameters(), *group_);
    clip_grad_norm(model.parameters(), 1.0);
    // The real step's one wait, at the same place: it costs what it costs there.
    (void)out.loss.item();
    optimizer->step();
  }
  if (device_.is_cuda()) cuda::synchronize();  // the last step's kernels are still queued
  return seconds_since(start) / std::max(1, steps - std::min(2, steps - 1));
}

Trainer::KnnEvaluation Trainer::evaluate_knn() {
  auto start = Clock::now();
  KnnEvaluation e;
  student_->train(false);
  e.student = knn_(*student_->backbone);
  student_->train(true);
  if (teacher_ && state_.global_step == 0) {
    e.teacher = e.student;
    e.teacher_copied = true;
  } else if (teacher_) {
    teacher_->train(false);
    e.teacher = knn_(*teacher_->backbone);
    teacher_->train(true);
  }
  e.seconds = seconds_since(start);
  return e;
}

std::string Trainer::KnnEvaluation::text() const {
  std::string t = fmt::format("top-1 {:.2f}%  top-5 {:.2f}%", student.top1, student.top5);
  if (teacher_copied)
    t += "  (teacher: the same, it is the student's copy before the first step)";
  else if (teacher)
    t += fmt::format("  (teacher: top-1 {:.2f}%  top-5 {:.2f}%)", teacher->top1, teacher->top5);
  return t;
}

void Trainer::KnnEvaluation::into(EpochStats* stats) const {
  stats->knn_top1 = student.top1;
  stats->knn_top5 = student.top5;
  if (teacher) {
    stats->teacher_knn_top1 = teacher->top1;
    stats->teacher_knn_top5 = teacher->top5;
  }
}

int64_t Trainer::steps_within(double seconds, double step_seconds, int64_t from_step) const {
  EpochEndWork work;
  work.steps_per_epoch = data_->steps_per_epoch();
  work.saveckp_freq = config_.saveckp_freq;
  work.knn_freq = knn_ ? config_.knn_freq : 0;
  if (config_.use_ccrop) work.box_updates = ccrop_schedule_;
  work.save_seconds = save_seconds_.mean;
  work.knn_seconds = knn_seconds_.mean;
  work.box_update_seconds = box_update_seconds_.mean;
  return bam::steps_within(work, seconds, step_seconds, from_step);
}

void Trainer::use_fitted_steps(int64_t max_steps, bool set_warmup) {
  const int64_t steps = data_->steps_per_epoch();
  config_.max_steps = decided_by_rank0(max_steps);
  config_.epochs = (config_.max_steps + steps - 1) / steps;
  if (set_warmup) config_.warmup_steps = std::max<int64_t>(1, std::llround(0.1 * config_.max_steps));
  config_.reg_warmup_epochs = std::min(requested_reg_warmup_epochs_, config_.epochs);
  build_schedules();
}

void Trainer::refit_to_budget() {
  const int64_t steps = data_->steps_per_epoch();
  const double per_step = refit_window_seconds_ / static_cast<double>(std::max<int64_t>(1, refit_window_steps_));
  const double left = budget_seconds_ - seconds_since(run_start_);
  const int64_t planned = config_.max_steps;
  // The first refit, early in the warm-up, sets the warm-up's length for good (the later ones only
  // move the end of the cosine decay), and the interval of the refits to come, from its own plan
  // rather than the calibration's.
  const bool first = refits_done_ == 0;
  use_fitted_steps(steps_within(left, per_step, state_.global_step), first);
  if (first) refit_interval_ = std::max<int64_t>(state_.global_step, config_.max_steps / 20);
  ++refits_done_;
  std::printf(
      "Refitted to the budget at step %lld: %.3f s per step (mean of %lld steps), %lld steps in all (%.2f "
      "epochs; was %lld)\n",
      static_cast<long long>(state_.global_step), per_step, static_cast<long long>(refit_window_steps_),
      static_cast<long long>(config_.max_steps), static_cast<double>(config_.max_steps) / steps,
      static_cast<long long>(planned));
  // The window keeps growing: the mean of all steps since its start follows a lasting change of
  // speed, and averages out the minute-to-minute drift that a short window would chase (each
  // refit moves the cosine decay's end, so a jumpy estimate makes a jumpy learning rate).
  refit_at_step_ = state_.global_step + refit_interval_;
  if (refit_at_step_ >= config_.max_steps) refit_at_step_ = -1;  // the run ends first
}

void Trainer::save_timed(const std::string& path) {
  auto start = Clock::now();
  save(path);
  save_seconds_.add(seconds_since(start));
}

std::string Trainer::checkpoint_path() const { return config_.output_dir + "/checkpoint.safetensors"; }

void Trainer::resume_if_possible(TrainResult& result) {
  if (!std::filesystem::exists(checkpoint_path())) return;
  LoadedCheckpoint ck = load_checkpoint(checkpoint_path());
  if (auto flag = architecture_mismatch(ck.config, config_))
    fail("{}: the checkpoint was trained with a different {}; resume with the same value or use a new --output_dir",
         checkpoint_path(), *flag);
  // The schedule, the data order and the learning rate follow the global batch alone: any split of
  // it over processes continues the same run (rank r of W takes the images at r*B of each one).
  const int64_t ck_global = ck.config.batch_size_per_gpu * ck.config.world_size;
  const int64_t global = config_.batch_size_per_gpu * config_.world_size;
  if (ck_global != global) {
    const std::string keep =
        ck_global % config_.world_size == 0
            ? fmt::format("; keep {} images with --batch_size_per_gpu {} on {} process{}", ck_global,
                          ck_global / config_.world_size, config_.world_size, config_.world_size > 1 ? "es" : "")
            : std::string();
    fail(
        "{}: the checkpoint's run took global batches of {} images ({} process{} x --batch_size_per_gpu {}); "
        "resuming with {} ({} x {}) would change the schedule{}",
        checkpoint_path(), ck_global, ck.config.world_size, ck.config.world_size > 1 ? "es" : "",
        ck.config.batch_size_per_gpu, global, config_.world_size, config_.batch_size_per_gpu, keep);
  }
  if (ck.config.world_size != config_.world_size)
    std::printf("Resuming a run of %lld process%s x %lld images as %lld x %lld: the same global batch\n",
                static_cast<long long>(ck.config.world_size), ck.config.world_size > 1 ? "es" : "",
                static_cast<long long>(ck.config.batch_size_per_gpu), static_cast<long long>(config_.world_size),
                static_cast<long long>(config_.batch_size_per_gpu));
  if (ck.config.fit_epochs_to_budget) {
    // The schedule was fitted when the run started; keep it rather than fitting again (and say so
    // in this run's checkpoints, so that a later resume keeps it too).
    config_.fit_epochs_to_budget = true;
    config_.epochs = ck.config.epochs;
    config_.max_steps = ck.config.max_steps;
    config_.warmup_steps = ck.config.warmup_steps;
    config_.warmup_epochs = ck.config.warmup_epochs;
    config_.reg_warmup_epochs = ck.config.reg_warmup_epochs;
    build_schedules();
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
  if (config_.use_ccrop && !ck.object_boxes.defined()) {
    // The boxes would have been located by now: starting them over from the whole image would
    // crop differently from the run the checkpoint continues (the official script refuses too).
    const ContrastiveCropSchedule now{config_.loc_interval, config_.warmup_epochs};  // this run's flags
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
  // which NCCL cannot detect. All of them but the device, which is each rank's own.
  nlohmann::ordered_json flags = config_.to_json();
  flags.erase("device");
  bam::check_ranks_agree(*group_, flags.dump(), "flags",
                         "the printed arguments differ, and every rank needs the same ones but for --device");
  // The same images too: the same flags can name other files on another machine (a node's own
  // copy, a relative --data_path), and the ranks' batches would then be of other images.
  // Names within the folder: the folder itself may be mounted elsewhere on each machine.
  std::string images = std::to_string(data_->num_images()) + " images";
  if (const data::Dataset* d = data_->images())
    for (size_t i = 0; i < d->files.size(); ++i)
      images += "\n" + std::filesystem::path(d->files[i]).lexically_relative(d->root).string() + "\t" +
                std::to_string(d->labels[i]);
  bam::check_ranks_agree(*group_, images, "images",
                         "every rank must read the same --data_path files (a shared folder, or copies at the same "
                         "path)");
  // The step and a sum over every weight, from rank 0 to all; each rank compares its own.
  double checksum = 0;  // in order, on the host: the same bits from the same weights on any rank
  for (const Tensor& p : student_->parameters()) {
    Tensor host = p.detach().to(Device::cpu()).to(DType::f64).contiguous();
    for (int64_t i = 0; i < host.numel(); ++i) checksum += host.data<double>()[i];
  }
  Tensor mine = empty({2}, {DType::f64, Device::cpu()});
  mine.data<double>()[0] = static_cast<double>(state_.global_step);
  mine.data<double>()[1] = checksum;
  Tensor root = mine.clone();
  group_->broadcast(root);
  BAM_CHECK(root.data<double>()[0] == mine.data<double>()[0] && root.data<double>()[1] == mine.data<double>()[1],
            "rank {} starts at step {} with weight sum {:.9g}, rank 0 at step {} with {:.9g}: every rank must read "
            "the same --output_dir (a shared folder) and be built with the same flags",
            config_.rank, state_.global_step, checksum, static_cast<int64_t>(root.data<double>()[0]),
            root.data<double>()[1]);
}

int64_t Trainer::decided_by_rank0(int64_t value) {
  if (!group_) return value;
  Tensor t = full({1}, static_cast<double>(value), {DType::f64, Device::cpu()});
  group_->broadcast(t);
  return static_cast<int64_t>(t.data<double>()[0]);
}

void Trainer::save(const std::string& path) {
  if (!writes_files()) return;
  state_.optimizer_steps = optimizer_->steps();
  state_.step_in_epoch = step_in_epoch_;
  state_.loss_scale = scaler_.enabled() ? scaler_.scale() : 0.0;
  state_.loss_scale_clean_steps = scaler_.enabled() ? scaler_.clean_steps() : 0;
  Tensor boxes;
  if (object_boxes_) boxes = data::boxes_to_tensor(object_boxes_->boxes);
  save_checkpoint(path, config_, state_, *student_, teacher_.get(), *optimizer_, boxes);
}

std::string Trainer::memory_text() const {
  if (device_.is_cuda()) {
    auto stats = cuda::memory_stats(device_.index);
    return fmt::format("{:.2f} GiB (peak {:.2f})", stats.bytes_in_use / 1073741824.0,
                       stats.peak_bytes_in_use / 1073741824.0);
  }
  return fmt::format("{:.2f} GiB (peak {:.2f})", cpu_bytes_in_use() / 1073741824.0, cpu_peak_bytes() / 1073741824.0);
}

namespace {

// The kNN results of `s` that were measured, under their log.txt keys.
void add_knn_fields(nlohmann::ordered_json& j, const EpochStats& s) {
  if (s.knn_top1 >= 0) {
    j["knn_top1"] = s.knn_top1;
    j["knn_top5"] = s.knn_top5;
  }
  if (s.teacher_knn_top1 >= 0) {
    j["teacher_knn_top1"] = s.teacher_knn_top1;
    j["teacher_knn_top5"] = s.teacher_knn_top5;
  }
}

}  // namespace

nlohmann::ordered_json Trainer::log_row(const EpochStats& s, bool cuda) {
  nlohmann::ordered_json j;
  j["train_loss"] = s.loss;
  j["train_lr"] = s.lr;
  j["train_wd"] = s.wd;
  j["train_reg"] = s.reg;
  j["train_target_entropy"] = s.target_entropy;
  j["train_embedding_std"] = s.embedding_std;
  j["train_img_per_s"] = s.img_per_s;
  j["train_data_wait_s"] = s.data_wait_s;
  j["train_seconds"] = s.seconds;
  if (cuda) j["train_host_waits_per_step"] = s.host_waits_per_step;
  add_knn_fields(j, s);
  if (s.box_area >= 0) {
    j["ccrop_box_area"] = s.box_area;
    j["ccrop_box_seconds"] = s.box_seconds;
  }
  j["epoch"] = s.epoch;
  return j;
}

void Trainer::append_log(const EpochStats& s) { append_log_row(log_row(s, device_.is_cuda())); }

void Trainer::restore_lost_epoch_row() {
  if (state_.last_epoch_row.empty()) return;  // no epoch has ended yet (or an older checkpoint)
  nlohmann::ordered_json row = nlohmann::ordered_json::parse(state_.last_epoch_row);
  const int64_t epoch = row.at("epoch").get<int64_t>();
  int64_t lost = 0;
  if (writes_files()) {
    lost = 1;
    std::ifstream in(config_.output_dir + "/log.txt");
    for (std::string line; lost && std::getline(in, line);) {
      const nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (r.is_object() && !r.value("before_training", false) && r.value("epoch", int64_t{-2}) == epoch) lost = 0;
    }
  }
  if (!decided_by_rank0(lost)) return;
  // The weights are the epoch's end only if nothing trained after it (a run stopped by its budget
  // later saves this row again, from a later step).
  const bool evaluate =
      knn_ && config_.knn_freq > 0 && state_.last_epoch_knn_due && state_.last_epoch_row_step == state_.global_step;
  if (evaluate) {
    EpochStats measured;
    KnnEvaluation knn = evaluate_knn();
    knn.into(&measured);
    add_knn_fields(row, measured);
    row.erase("epoch");  // back to the last key, as append_log writes it
    row["epoch"] = epoch;
    std::printf("kNN evaluation after epoch %lld (run again: the previous run stopped during it): %s (%.1f s)\n",
                static_cast<long long>(epoch), knn.text().c_str(), knn.seconds);
  }
  append_log_row(row);
  std::printf(
      "Resuming: log.txt had no row for epoch %lld (the previous run stopped after saving it%s); written "
      "from the checkpoint%s\n",
      static_cast<long long>(epoch), state_.last_epoch_knn_due ? ", during its kNN evaluation" : "",
      evaluate ? " with the evaluation run again" : ", without a kNN evaluation");
}

void Trainer::trim_logs_to_checkpoint() {
  if (!writes_files()) return;
  const auto trim = [](const std::string& path, const std::function<bool(const nlohmann::json&)>& keep) {
    std::ifstream in(path);
    if (!in.good()) return;
    std::string kept, line;
    int64_t dropped = 0;
    while (std::getline(in, line)) {
      const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!row.is_discarded() && row.is_object() && keep(row)) {
        kept += line + "\n";
      } else if (!line.empty()) {
        ++dropped;
      }
    }
    in.close();
    if (dropped == 0) return;
    write_file_atomically(path, kept);
    std::printf("Resuming: %lld line%s of %s from after the checkpoint (or cut off) dropped\n",
                static_cast<long long>(dropped), dropped == 1 ? "" : "s", path.c_str());
  };
  const int64_t step = state_.global_step, epoch = state_.epoch;
  const bool inside_epoch = step_in_epoch_ > 0;
  trim(config_.output_dir + "/steps.jsonl",
       [&](const nlohmann::json& row) { return row.value("step", int64_t{0}) <= step; });
  trim(config_.output_dir + "/log.txt", [&](const nlohmann::json& row) {
    // An evaluation before training at this checkpoint's step came from a run that started here and
    // is now run again.
    if (row.value("before_training", false)) return row.value("global_step", int64_t{0}) < step;
    // Epochs before the checkpoint's; its own only when it holds the epoch's end (--max_steps ended
    // the schedule inside it), after which nothing runs again.
    const int64_t e = row.value("epoch", int64_t{-1});
    return e < epoch || (e == epoch && inside_epoch && step >= total_steps_);
  });
}

void Trainer::append_log_row(const nlohmann::ordered_json& row) {
  if (!writes_files()) return;
  std::ofstream out(config_.output_dir + "/log.txt", std::ios::app);
  BAM_CHECK(out.good(), "{}/log.txt: cannot open for appending", config_.output_dir);
  out << row.dump() << "\n";
}

EpochStats Trainer::train_epoch(int64_t epoch, TrainResult& result, const std::optional<Clock::time_point>& deadline) {
  const int64_t steps = data_->steps_per_epoch(), B = config_.batch_size_per_gpu;
  BamLossOptions loss_options;
  loss_options.n_global = config_.global_crops_number;
  loss_options.n_local = config_.local_crops_number;
  loss_options.target_crops = config_.target_crops();
  loss_options.temperature = config_.temperature;
  loss_options.num_sink_iter = config_.num_sink_iter;
  loss_options.top_k = config_.top_k_sink;
  loss_options.positive_masking = config_.positive_masking;
  const double reg = reg_for_epoch(config_.reg, config_.final_reg(), config_.reg_warmup_epochs, epoch);

  EpochStats stats;
  stats.epoch = epoch;
  stats.reg = reg;
  double loss_sum = 0, entropy_sum = 0, std_sum = 0;
  int64_t counted = 0;
  auto start = Clock::now();
  data_->start_epoch(epoch, step_in_epoch_);
  student_->train();
  if (teacher_) teacher_->train();
  for (int64_t it = step_in_epoch_; it < steps; ++it) {
    const int64_t gs = epoch * steps + it;
    if (gs >= total_steps_) break;  // --max_steps ends the run inside this epoch
    // Dropout and stochastic depth draw from a stream keyed by the step: resumable exactly. Each rank
    // draws its own masks (keyed by the rank too; rank 0's are a single process's).
    manual_seed(static_cast<uint64_t>(config_.seed) * 1000003ull + static_cast<uint64_t>(gs) +
                static_cast<uint64_t>(config_.rank) * 0x9e3779b97f4a7c15ull);
    auto wait_start = Clock::now();
    const int64_t waits_before = cuda::host_waits();
    CropBatch batch = data_->next();
    // The host's wait for the batch, and the GPU's for the loader's kernels (data starvation both).
    stats.data_wait_s += seconds_since(wait_start) + batch.device_wait_seconds;
    for (Tensor& g : batch.groups) g = g.to(device_);

    // The model runs under the autocast policy (engine/autocast.h); the loss always in f32.
    Tensor z, z_teacher;
    {
      AutocastGuard autocast(compute_dtype_);
      z = student_->forward(batch.groups);
      if (teacher_) {
        NoGradGuard no_grad;
        z_teacher = teacher_->forward(batch.groups);
      }
    }
    BamLossResult out = group_ ? bam_loss_across_ranks(z, reg, loss_options, z_teacher, *group_)
                               : bam_loss(z, reg, loss_options, z_teacher);
    optimizer_->zero_grad();
    scaler_.scale_loss(out.loss).backward();
    std::vector<Tensor> params = student_->parameters();
    // Data parallelism: each rank holds the part of the global batch's gradient that flowed through
    // its own images (engine/distributed.h); their sum is the whole gradient, before anything reads it.
    if (group_) sum_gradients_over_ranks(params, *group_);
    // fp16: gradients back to their true size. Their sum of squares, read below with the loss, is
    // not finite when one overflowed: the step is then skipped and the scale shrinks. Clipping such
    // gradients first is harmless, since they are never applied.
    const Tensor grad_sum_of_squares = scaler_.unscale_queued(params);
    if (config_.clip_grad > 0) {
      if (config_.clip_mode == "param")
        clip_grad_per_param(params, config_.clip_grad);
      else
        clip_grad_norm(params, config_.clip_grad);
    }
    if (epoch < config_.freeze_last_layer)
      for (auto& [name, p] : student_->head->last_linear()->named_parameters()) p.set_grad(Tensor());
    optimizer_->set_lr(lr_schedule_[gs]);
    optimizer_->set_weight_decay(wd_schedule_[gs]);
    // The loss, the target entropy, the embedding spread and fp16's overflow check are read
    // together once backward is queued: on a GPU that is the step's one wait, and a non-finite
    // loss stops the run before the weights or anything saved change, as does an index error a
    // kernel found (engine/cuda_error_slots.h).
    // With several ranks, the whole batch's loss and embedding spread.
    const StepMetrics metrics = read_step_metrics(group_ ? out.loss_over_ranks : out.loss, out.target_entropy,
                                                  embedding_std(z, group_), grad_sum_of_squares);
    const double loss = metrics.loss, spread = metrics.embedding_std;
    const bool finite = std::isfinite(metrics.grad_sum_of_squares);
    if (!std::isfinite(loss)) {
      std::fprintf(stderr, "Loss is %g at epoch %lld step %lld: stopping. The last checkpoint (%s) is intact.\n", loss,
                   static_cast<long long>(epoch), static_cast<long long>(it), checkpoint_path().c_str());
      fail("non-finite loss ({}) at epoch {} step {}; lower --lr or raise --reg, then resume", loss, epoch, it);
    }
    if (finite) optimizer_->step();
    scaler_.update(finite);
    if (teacher_) {
      NoGradGuard no_grad;
      ema_update(teacher_->parameters(), student_->parameters(), momentum_schedule_[gs]);
    }

    result.step_losses.push_back(loss);
    loss_sum += loss;
    entropy_sum += metrics.target_entropy;
    std_sum += spread;
    ++counted;
    ++state_.global_step;
    step_in_epoch_ = it + 1;
    stats.lr = lr_schedule_[gs];
    stats.wd = wd_schedule_[gs];

    double elapsed = seconds_since(start);
    double img_per_s = static_cast<double>(counted * B * config_.world_size) / elapsed;  // all ranks
    if ((it + 1) % config_.log_freq == 0 || it + 1 == steps) {
      double remaining_steps = static_cast<double>(total_steps_ - gs - 1);
      std::printf(
          "Epoch [%lld/%lld] step %lld/%lld  eta %s  loss %.4f  lr %.3e  wd %.4f  ent %.3f  std %.3f  "
          "img/s %.1f  data %.3fs  mem %s\n",
          static_cast<long long>(epoch), static_cast<long long>((total_steps_ + steps - 1) / steps),
          static_cast<long long>(it + 1), static_cast<long long>(steps),
          duration_text(remaining_steps * elapsed / counted).c_str(), loss, lr_schedule_[gs], wd_schedule_[gs],
          metrics.target_entropy, spread, img_per_s, stats.data_wait_s / counted, memory_text().c_str());
      std::fflush(stdout);
      nlohmann::ordered_json j;
      j["epoch"] = epoch;
      j["step"] = state_.global_step;
      j["loss"] = loss;
      j["lr"] = lr_schedule_[gs];
      j["wd"] = wd_schedule_[gs];
      j["target_entropy"] = metrics.target_entropy;
      j["embedding_std"] = spread;
      j["img_per_s"] = img_per_s;
      j["data_wait_s"] = stats.data_wait_s / counted;
      // When this line was written (seconds since the run started): with --log_freq 1, the
      // differences between lines of one epoch are the steps' own times.
      j["time_s"] = seconds_since(run_start_);
      if (writes_files()) std::ofstream(config_.output_dir + "/steps.jsonl", std::ios::app) << j.dump() << "\n";
    }
    // Each step of the refit window, from its wait for data to here: the epoch-end work that the
    // window may span is counted separately.
    if (refit_at_step_ > 0) {
      if (state_.global_step > refit_window_start_) {
        refit_window_seconds_ += seconds_since(wait_start);
        ++refit_window_steps_;
      }
      if (state_.global_step == refit_at_step_) refit_to_budget();
    }
    // Everything of the step, its logging included, has run: a wait anywhere in it is counted.
    stats.host_waits_per_step += static_cast<double>(cuda::host_waits() - waits_before);
    if (deadline && decided_by_rank0(Clock::now() >= *deadline) && it + 1 < steps && gs + 1 < total_steps_) {
      result.stopped_by_budget = true;
      break;
    }
  }
  stats.seconds = seconds_since(start);
  if (counted > 0) {
    stats.loss = loss_sum / counted;
    stats.target_entropy = entropy_sum / counted;
    stats.embedding_std = std_sum / counted;
    stats.img_per_s = static_cast<double>(counted * B * config_.world_size) / stats.seconds;
    stats.data_wait_s /= counted;
    stats.host_waits_per_step /= counted;
  }
  return stats;
}

TrainResult Trainer::run() {
  if (writes_files()) {
    prepare_output_dir(config_.output_dir);
    for (const std::string& name : remove_abandoned_temporary_files(config_.output_dir))
      std::printf("Removed %s/%s, a file an interrupted run left half-written\n", config_.output_dir.c_str(),
                  name.c_str());
  }
  TrainResult result;
  resume_if_possible(result);
  check_ranks_agree();
  if (result.resumed) restore_lost_epoch_row();  // after the check: it may run the (collective) kNN monitor
  bool resumed_boxes = false;
  if (config_.use_ccrop) {
    // After the resume, which may restore a budget-fitted --warmup_epochs.
    ccrop_schedule_ = {config_.loc_interval, config_.warmup_epochs};
    // The boxes start as the whole image (or as the checkpoint left them).
    resumed_boxes = !resumed_boxes_.empty();
    use_object_boxes(resumed_boxes ? std::move(resumed_boxes_) : std::vector<data::ObjectBox>(data_->images()->size()),
                     state_.epoch);
  }
  int64_t params = 0;
  for (auto& p : student_->parameters()) params += p.numel();
  std::printf("%s\n%lld parameters; %lld steps per epoch of %lld images x %lld crops\n", data_->describe().c_str(),
              static_cast<long long>(params), static_cast<long long>(data_->steps_per_epoch()),
              static_cast<long long>(config_.batch_size_per_gpu),
              static_cast<long long>(config_.global_crops_number + config_.local_crops_number));
  if (!device_.is_cuda()) {
    const bool bf16 = compute_dtype_ == DType::bf16;
    std::printf("CPU matmuls: %s (%s)\n", bf16 ? "bf16 operands, f32 sums" : "f32",
                bf16 ? cpu::gemm_bf16_kernel_name() : cpu::gemm_kernel_name());
    if (bf16 && !cpu::cpu_has_amx_bf16() && !cpu::cpu_has_avx512_bf16()) {
      std::printf(
          "note: this CPU has neither AMX-BF16 nor AVX-512 BF16, so --precision bf16 rounds the matmul operands "
          "without running faster; --precision f32 is quicker here\n");
    }
  }
  double budget_seconds = 60 * config_.time_budget_minutes;
  const bool fit = config_.fit_epochs_to_budget && !result.resumed;
  const double step_seconds = fit ? measure_step_seconds() : 0.0;  // calibration, outside the budget
  run_start_ = Clock::now();
  if (fit) {
    // The work between epochs is part of the budget too: a checkpoint save per epoch, and a kNN
    // evaluation every --knn_freq epochs. On a GPU a small model's epoch can take less time than
    // one kNN evaluation, so both are measured once here and counted in the schedule.
    const std::string probe = config_.output_dir + "/checkpoint.timing.tmp";
    save_timed(probe);  // rank 0 alone writes, and removes
    if (writes_files()) std::filesystem::remove(probe);
    // And ContrastiveCrop's box updates, a pass of the model over the training images each.
    if (config_.use_ccrop && writes_files()) box_update_seconds_.add(measure_box_update_seconds());  // rank 0 fits
  }
  // A kNN evaluation of the weights training starts from: asked for (--eval_first), or, fitting a
  // budget, to time the monitor (it is then also the baseline of the evaluations to come).
  // It goes to log.txt as a row of its own, marked before_training, at the epoch before the first
  // one to train (-1 for a new run, as the official script's eval_first logs it) and the step it
  // starts from (a run resumed mid-epoch). A finished run, run again, trains nothing: no evaluation.
  const bool finished = state_.global_step >= total_steps_;
  if (knn_ && !finished && (config_.eval_first || (fit && config_.knn_freq > 0))) {
    KnnEvaluation knn = evaluate_knn();
    knn_seconds_.add(knn.teacher_copied ? 2 * knn.seconds : knn.seconds);  // what the evaluations to come cost
    std::printf("kNN evaluation before training: %s (%.1f s%s)\n", knn.text().c_str(), knn.seconds,
                config_.time_budget_minutes > 0 ? ", counted in the budget" : "");
    EpochStats measured;
    knn.into(&measured);
    nlohmann::ordered_json j;
    add_knn_fields(j, measured);
    j["epoch"] = state_.epoch - 1;
    j["global_step"] = state_.global_step;
    j["before_training"] = true;
    append_log_row(j);
  }
  if (fit) {
    const int64_t steps = data_->steps_per_epoch();
    requested_reg_warmup_epochs_ = config_.reg_warmup_epochs;
    use_fitted_steps(steps_within(budget_seconds - seconds_since(run_start_), step_seconds, 0), true);
    std::printf(
        "Measured %.3f s per step: %lld steps (%.2f epochs of %lld steps) fit the %g-minute budget; "
        "warm-up %lld steps\n",
        step_seconds, static_cast<long long>(config_.max_steps), static_cast<double>(config_.max_steps) / steps,
        static_cast<long long>(steps), config_.time_budget_minutes, static_cast<long long>(config_.warmup_steps));
    if (config_.use_ccrop)
      std::printf("(counting a box update at %.3g s, measured on a sample of the images)\n", box_update_seconds_.mean);
    // Refit from real steps early in the warm-up (leaving the first third of that window out, past
    // start-up costs), then about twenty times more in the run, each from the mean of all the steps
    // timed since then and the epoch-end work's mean cost so far. The deadline only catches a
    // far-off estimate.
    refit_at_step_ = std::clamp<int64_t>(config_.max_steps / 20, 9, 60);
    refit_window_start_ = refit_at_step_ / 3;
    budget_seconds_ = budget_seconds;
    budget_seconds *= 1.15;
  }
  std::optional<Clock::time_point> deadline;
  if (config_.time_budget_minutes > 0)
    deadline =
        run_start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_seconds));

  if (config_.use_ccrop) print_contrastive_crop_plan(resumed_boxes);
  // epochs_in_schedule() is asked every epoch: a budget refit can change the schedule's length.
  for (int64_t epoch = state_.epoch; epoch < epochs_in_schedule(); ++epoch) {
    if (state_.global_step >= total_steps_) break;  // a resumed run whose schedule ended inside this epoch
    EpochStats stats = train_epoch(epoch, result, deadline);
    if (result.stopped_by_budget) {
      save_timed(checkpoint_path());
      std::printf("Time budget of %g minutes spent at epoch %lld step %lld; checkpoint saved, run again to continue\n",
                  config_.time_budget_minutes, static_cast<long long>(epoch), static_cast<long long>(step_in_epoch_));
      break;
    }
    // An epoch that --max_steps ended early stays the current one, at the step reached: a run
    // resumed with a longer schedule continues it rather than skipping its remaining steps.
    if (step_in_epoch_ == data_->steps_per_epoch()) {
      state_.epoch = epoch + 1;
      step_in_epoch_ = 0;
    }
    bool last = epoch + 1 == epochs_in_schedule();
    if (config_.use_ccrop && ccrop_schedule_.renews_after(epoch, epochs_in_schedule())) {
      renew_object_boxes(epoch, &stats);
      box_update_seconds_.add(stats.box_seconds);
    }
    // The epoch is saved before the kNN evaluation, which reads other folders and takes long: if it
    // fails (a folder gone, memory short) or the run is stopped then, the epoch's training is kept,
    // and so is its log row, which a resume writes if this run does not (restore_lost_epoch_row).
    const bool knn_due = knn_ && config_.knn_freq > 0 && ((epoch + 1) % config_.knn_freq == 0 || last);
    state_.last_epoch_row = log_row(stats, device_.is_cuda()).dump();
    state_.last_epoch_row_step = state_.global_step;
    state_.last_epoch_knn_due = knn_due;
    save_timed(checkpoint_path());
    if (config_.saveckp_freq > 0 && epoch % config_.saveckp_freq == 0)
      save_timed(fmt::format("{}/checkpoint{:04}.safetensors", config_.output_dir, epoch));
    if (knn_due) {
      KnnEvaluation knn;
      try {
        knn = evaluate_knn();
      } catch (...) {
        append_log(stats);  // the epoch's row, without the evaluation that failed
        throw;
      }
      knn_seconds_.add(knn.seconds);
      knn.into(&stats);
      std::printf("kNN evaluation after epoch %lld: %s (%.1f s)\n", static_cast<long long>(epoch), knn.text().c_str(),
                  knn.seconds);
    }
    append_log(stats);
    result.epochs.push_back(stats);
    std::printf("Epoch %lld done in %s: loss %.4f  target entropy %.3f  embedding std %.3f  %.1f img/s\n",
                static_cast<long long>(epoch), duration_text(stats.seconds).c_str(), stats.loss, stats.target_entropy,
                stats.embedding_std, stats.img_per_s);
    std::fflush(stdout);
  }
  try {
    if (writes_files()) std::printf("Report: %s\n", write_training_report(config_.output_dir).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: could not write the report: %s\n", e.what());
  }
  return result;
}

}  // namespace bam
