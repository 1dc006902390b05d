// The training loop: the step, the epoch, the time budget and its refits, the stop on a signal,
// the kNN monitor. Resume and checkpoints are in trainer_resume.cpp, log.txt in trainer_logs.cpp,
// ContrastiveCrop in trainer_contrastive_crop.cpp.
#include "bam/trainer.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bam/bam_loss.h"
#include "bam/budget_fit.h"
#include "bam/output_dir.h"
#include "bam/report.h"
#include "bam/schedules.h"
#include "bam/stop_signals.h"
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
// step's one wait. `gradient_check` is finite exactly when every gradient is (a sum of their
// squares, or their norm); 0 when undefined (no gradients).
struct StepMetrics {
  double loss, target_entropy, embedding_std, gradient_check;
};
StepMetrics read_step_metrics(const Tensor& loss, const Tensor& entropy, const Tensor& spread,
                              const Tensor& gradient_check) {
  std::vector<Tensor> values = {loss, entropy, spread};
  if (gradient_check.defined()) values.push_back(gradient_check);
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
  const int64_t warmup =
      config_.warmup_steps > 0 ? config_.warmup_steps : config_.warmup_epochs * data_->steps_per_epoch();
  if (writes_files() && !config_.fit_epochs_to_budget && warmup >= total_steps_ && warmup > 0)
    std::printf(
        "note: the warm-up (%lld steps, --warmup_%s) is as long as the whole run (%lld steps): the learning rate "
        "only rises, and never decays\n",
        static_cast<long long>(warmup), config_.warmup_steps > 0 ? "steps" : "epochs",
        static_cast<long long>(total_steps_));
}

void Trainer::build_schedules() {
  const int64_t steps = data_->steps_per_epoch();
  // Linear scaling rule: the base learning rate is given for a (global) batch of 256.
  const double base_lr = config_.lr * static_cast<double>(config_.batch_size_per_gpu * config_.world_size) / 256.0;
  total_steps_ = config_.max_steps > 0 ? std::min(config_.max_steps, config_.epochs * steps) : config_.epochs * steps;
  const int64_t warmup = config_.warmup_steps > 0 ? config_.warmup_steps : config_.warmup_epochs * steps;
  lr_schedule_ = CosineSchedule(base_lr, config_.min_lr, total_steps_, warmup);
  wd_schedule_ = CosineSchedule(config_.weight_decay, config_.weight_decay_end, total_steps_, 0);
  momentum_schedule_ = CosineSchedule(config_.teacher_m, 1.0, total_steps_, 0);
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
  return bam::steps_within(epoch_end_work(), seconds, step_seconds, from_step);
}

EpochEndWork Trainer::epoch_end_work() const {
  EpochEndWork work;
  work.steps_per_epoch = data_->steps_per_epoch();
  work.saveckp_freq = config_.saveckp_freq;
  work.knn_freq = knn_ ? config_.knn_freq : 0;
  if (config_.use_ccrop) work.box_updates = config_.ccrop_schedule();
  work.save_seconds = save_seconds_.mean;
  work.knn_seconds = knn_seconds_.mean;
  work.box_update_seconds = box_update_seconds_.mean;
  return work;
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
  const EpochEndWork work = epoch_end_work();
  int64_t max_steps = bam::steps_within(work, left, per_step, state_.global_step);
  // The first refit, while the boxes have neither been located nor placed a crop, scales
  // ContrastiveCrop's schedule again, from its own plan rather than the calibration's (as it sets
  // the warm-up), and costs the plan with it. (A collective: every rank asks the same.)
  std::optional<ContrastiveCropSchedule> rescaled;
  if (!refit_.first_done() && box_schedule_scalable()) {
    EpochEndWork scaled_work = work;
    scaled_work.box_schedule_epochs = config_.ccrop_scaled_from_epochs;
    const int64_t scaled_steps = decided_by_rank0(bam::steps_within(scaled_work, left, per_step, state_.global_step));
    const ContrastiveCropSchedule candidate =
        config_.ccrop_schedule().scaled(config_.ccrop_scaled_from_epochs, (scaled_steps + steps - 1) / steps);
    if (candidate.untouched_at(state_.epoch)) {
      rescaled = candidate;
      max_steps = scaled_steps;
    } else if (config_.use_ccrop) {
      std::printf(
          "(ContrastiveCrop's schedule stays scaled to %lld epochs: scaled to the refitted plan's %lld, its boxes "
          "would already have been located or placed crops)\n",
          static_cast<long long>(config_.ccrop_scaled_to_epochs), static_cast<long long>(candidate.scaled_to));
    }
  }
  use_fitted_steps(max_steps, refit_restarts_warmup(refit_, state_.global_step, config_.warmup_steps));
  if (rescaled) use_box_schedule(*rescaled, "the refitted plan's");
  std::printf(
      "Refitted to the budget at step %lld: %.3f s per step (mean of %lld steps), %lld steps in all (%.2f "
      "epochs; was %lld)\n",
      static_cast<long long>(state_.global_step), per_step, static_cast<long long>(refit_window_steps_),
      static_cast<long long>(config_.max_steps), static_cast<double>(config_.max_steps) / steps,
      static_cast<long long>(planned));
  // The window keeps growing: the mean of all steps since its start follows a lasting change of
  // speed, and averages out the minute-to-minute drift that a short window would chase (each
  // refit moves the cosine decay's end, so a jumpy estimate makes a jumpy learning rate).
  refit_ = next_refit_plan(refit_, state_.global_step, config_.max_steps);
}

void Trainer::save_timed(const std::string& path) {
  auto start = Clock::now();
  save(path);
  save_seconds_.add(seconds_since(start));
}

std::string Trainer::checkpoint_path() const { return config_.output_dir + "/checkpoint.safetensors"; }

int64_t Trainer::decided_by_rank0(int64_t value) {
  if (!group_) return value;
  Tensor t = full({1}, static_cast<double>(value), {DType::f64, Device::cpu()});
  group_->broadcast(t);
  return static_cast<int64_t>(t.data<double>()[0]);
}

Trainer::StopDecision Trainer::stop_decision(const std::optional<Clock::time_point>& deadline) {
  const int signal = stop_signal();
  const bool out_of_time = deadline && Clock::now() >= *deadline;
  if (!group_) return {out_of_time, signal};
  Tensor t = from_vector(std::vector<double>{writes_files() && out_of_time ? 1.0 : 0.0, signal != 0 ? 1.0 : 0.0,
                                             static_cast<double>(signal)},
                         {3});
  group_->all_reduce_sum(t);
  const double* v = t.data<double>();
  StopDecision d;
  d.budget = v[0] > 0;
  // Every signalled rank got SIGINT: SIGINT; every one SIGHUP: SIGHUP; else SIGTERM.
  if (v[1] > 0) d.signal = v[2] == SIGINT * v[1] ? SIGINT : v[2] == SIGHUP * v[1] ? SIGHUP : SIGTERM;
  return d;
}

std::string Trainer::memory_text() const {
  if (device_.is_cuda()) {
    auto stats = cuda::memory_stats(device_.index);
    return fmt::format("{:.2f} GiB (peak {:.2f})", stats.bytes_in_use / 1073741824.0,
                       stats.peak_bytes_in_use / 1073741824.0);
  }
  return fmt::format("{:.2f} GiB (peak {:.2f})", cpu_bytes_in_use() / 1073741824.0, cpu_peak_bytes() / 1073741824.0);
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
  // A new epoch starts its sums and fixes its regularisation; a resumed one continues those of its
  // checkpoint, the regularisation included (a refit during the epoch, or a changed
  // --reg_warmup_epochs, acts from the next epoch, as in the uninterrupted run).
  if (step_in_epoch_ == 0) epoch_sums_ = EpochSums{};
  EpochSums& sums = epoch_sums_;
  if (sums.reg < 0) sums.reg = reg_for_epoch(config_.reg, config_.final_reg(), config_.reg_warmup_epochs, epoch);
  const double reg = sums.reg;

  EpochStats stats;
  stats.epoch = epoch;
  stats.reg = reg;
  const double seconds_before = sums.seconds;  // in the run that saved them
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
    sums.data_wait_s += seconds_since(wait_start) + batch.device_wait_seconds;
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
    // Whether every gradient is finite, read below with the loss. fp16: the gradients back to their
    // true size, and their sum of squares: not finite when one overflowed, the step is then skipped
    // and the scale shrinks. Clipping such gradients first is harmless, since they are never
    // applied. f32 and bf16: the global clip's norm, or else a sum of squares of its own; a
    // non-finite gradient there (a finite loss can have one) stops the run before it reaches the
    // weights, and so the checkpoint.
    Tensor gradient_check = scaler_.unscale_queued(params), clip_norm;
    if (config_.clip_grad > 0) {
      if (config_.clip_mode == "param")
        clip_grad_per_param(params, config_.clip_grad);
      else
        clip_norm = clip_grad_norm(params, config_.clip_grad);
    }
    if (epoch < config_.freeze_last_layer)
      for (auto& [name, p] : student_->head->last_linear()->named_parameters()) p.set_grad(Tensor());
    // (After the freeze: a frozen layer's gradient is never applied. The global clip's norm counts
    // it, as DINO's does, and a non-finite one there would have made the others NaN.)
    if (!scaler_.enabled()) gradient_check = clip_norm.defined() ? clip_norm : grad_sum_of_squares(params);
    optimizer_->set_lr(lr_schedule_.at(gs));
    optimizer_->set_weight_decay(wd_schedule_.at(gs));
    // The loss, the target entropy, the embedding spread and fp16's overflow check are read
    // together once backward is queued: on a GPU that is the step's one wait, and a non-finite
    // loss stops the run before the weights or anything saved change, as does an index error a
    // kernel found (engine/cuda_error_slots.h).
    // With several ranks, the whole batch's loss and embedding spread.
    const StepMetrics metrics = read_step_metrics(group_ ? out.loss_over_ranks : out.loss, out.target_entropy,
                                                  embedding_std(z, group_), gradient_check);
    const double loss = metrics.loss, spread = metrics.embedding_std;
    const bool finite = std::isfinite(metrics.gradient_check);
    if (!std::isfinite(loss) || (!finite && !scaler_.enabled())) {
      // Steps counted from 1, as the progress line counts them.
      std::error_code ec;
      const bool saved = std::filesystem::exists(checkpoint_path(), ec);
      fail(
          "non-finite {} at epoch {} step {}: stopping, nothing of this step saved. Lower --lr{} or raise --reg, "
          "then {}",
          std::isfinite(loss) ? fmt::format("gradient (the loss, {}, is finite)", loss)
                              : fmt::format("loss ({})", loss),
          epoch, it + 1, config_.clip_grad > 0 ? "" : ", clip the gradients (--clip_grad)",
          saved ? fmt::format("resume from the last checkpoint, {}, which is intact", checkpoint_path())
                : std::string("start again (no checkpoint was saved yet)"));
    }
    if (finite) optimizer_->step();
    scaler_.update(finite);
    if (!finite && scaler_.exhausted())
      fail(
          "fp16: the gradients stayed non-finite at every loss scale down to {:.3g} (epoch {} step {}, {} steps "
          "skipped "
          "so far): they overflow whatever the scale. Nothing of these steps was applied; lower --lr or raise --reg, "
          "or train with --precision bf16{}",
          scaler_.scale(), epoch, it + 1, scaler_.skipped_steps(),
          std::filesystem::exists(checkpoint_path()) ? fmt::format(", then resume from {}", checkpoint_path()) : "");
    if (teacher_) {
      NoGradGuard no_grad;
      ema_update(teacher_->parameters(), student_->parameters(), momentum_schedule_.at(gs));
    }

    result.step_losses.push_back(loss);
    sums.loss += loss;
    sums.target_entropy += metrics.target_entropy;
    sums.embedding_std += spread;
    sums.lr += lr_schedule_.at(gs);
    sums.wd += wd_schedule_.at(gs);
    ++sums.steps;
    ++state_.global_step;
    step_in_epoch_ = it + 1;

    const double elapsed = seconds_before + seconds_since(start);
    sums.seconds = elapsed;
    const auto counted = static_cast<double>(sums.steps);
    const double img_per_s = counted * static_cast<double>(B * config_.world_size) / elapsed;  // all ranks
    if ((it + 1) % config_.log_freq == 0 || it + 1 == steps || gs + 1 == total_steps_) {
      // The steps left at this epoch's pace, and the saves, kNN evaluations and box updates of the
      // epoch ends to come at what they have cost so far.
      const double eta = seconds_to_finish(epoch_end_work(), elapsed / counted, state_.global_step, total_steps_);
      std::printf(
          "Epoch [%lld/%lld] step %lld/%lld  eta %s  loss %.4f  lr %.3e  wd %.4f  ent %.3f  std %.3f  "
          "img/s %.1f  data %.3fs  mem %s\n",
          static_cast<long long>(epoch), static_cast<long long>((total_steps_ + steps - 1) / steps),
          static_cast<long long>(it + 1), static_cast<long long>(steps), duration_text(eta).c_str(), loss,
          lr_schedule_.at(gs), wd_schedule_.at(gs), metrics.target_entropy, spread, img_per_s,
          sums.data_wait_s / counted, memory_text().c_str());
      std::fflush(stdout);
      nlohmann::ordered_json j;
      j["epoch"] = epoch;
      j["step"] = state_.global_step;
      j["loss"] = loss;
      j["lr"] = lr_schedule_.at(gs);
      j["wd"] = wd_schedule_.at(gs);
      j["target_entropy"] = metrics.target_entropy;
      j["embedding_std"] = spread;
      j["img_per_s"] = img_per_s;
      j["data_wait_s"] = sums.data_wait_s / counted;
      j["eta_s"] = eta;
      // When this line was written (seconds since the run started): with --log_freq 1, the
      // differences between lines of one epoch are the steps' own times.
      j["time_s"] = seconds_since(run_start_);
      if (writes_files()) {
        std::ofstream out(config_.output_dir + "/steps.jsonl", std::ios::app);
        out << j.dump() << "\n";
        out.flush();
        if (!out.good() && !steps_log_failed_) {  // the report's curves lose points; training goes on
          steps_log_failed_ = true;
          std::fprintf(stderr, "warning: %s/steps.jsonl: a step's line could not be written (disk full?)\n",
                       config_.output_dir.c_str());
        }
      }
    }
    // Each step of the refit window, from its wait for data to here: the epoch-end work that the
    // window may span is counted separately.
    if (refit_.at_step > 0) {
      if (state_.global_step > refit_.window_start) {
        refit_window_seconds_ += seconds_since(wait_start);
        ++refit_window_steps_;
      }
      if (state_.global_step == refit_.at_step) refit_to_budget();
    }
    // Everything of the step, its logging included, has run: a wait anywhere in it is counted.
    sums.host_waits += static_cast<double>(cuda::host_waits() - waits_before);
    // A stop between two steps of the epoch; after its last one (or the run's), the epoch's end
    // saves and the run stops before the next epoch.
    if (it + 1 < steps && gs + 1 < total_steps_) {
      const StopDecision stop = stop_decision(deadline);
      result.stopped_by_signal = stop.signal;
      result.stopped_by_budget = !stop.signal && stop.budget;
      if (stop.signal || stop.budget) break;
    }
  }
  // The whole epoch's, a part trained before a resume included.
  sums.seconds = seconds_before + seconds_since(start);
  stats.seconds = sums.seconds;
  if (sums.steps > 0) {
    const auto counted = static_cast<double>(sums.steps);
    stats.loss = sums.loss / counted;
    stats.target_entropy = sums.target_entropy / counted;
    stats.embedding_std = sums.embedding_std / counted;
    stats.lr = sums.lr / counted;
    stats.wd = sums.wd / counted;
    stats.img_per_s = counted * static_cast<double>(B * config_.world_size) / stats.seconds;
    stats.data_wait_s = sums.data_wait_s / counted;
    stats.host_waits_per_step = sums.host_waits / counted;
  }
  return stats;
}

namespace {

// The files bamtrain writes into --output_dir, whose abandoned temporary copies it may remove:
// checkpoint.safetensors, checkpointNNNN.safetensors, the save-timing probe, the logs and the
// report. (The folder may be shared, the current one by default.)
// checkpointNNNN.safetensors, an epoch's numbered copy (--saveckp_freq).
bool is_numbered_checkpoint(const std::string& name) {
  const std::string prefix = "checkpoint", suffix = ".safetensors";
  if (name.size() < prefix.size() + 4 + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const std::string number = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  return std::all_of(number.begin(), number.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

bool written_by_bamtrain(const std::string& name) {
  return name == "checkpoint.safetensors" || name == "log.txt" || name == "steps.jsonl" || name == "report.html" ||
         name == "checkpoint.timing" || name.rfind("checkpoint.timing.tmp.", 0) == 0 || is_numbered_checkpoint(name);
}

}  // namespace

TrainResult Trainer::run() {
  if (writes_files()) {
    prepare_output_dir(config_.output_dir);
    for (const std::string& name : remove_abandoned_temporary_files(config_.output_dir, written_by_bamtrain))
      std::printf("Removed %s/%s, a file an interrupted run left half-written\n", config_.output_dir.c_str(),
                  name.c_str());
  }
  TrainResult result;
  resume_if_possible(result);
  if (!result.resumed && writes_files()) {
    // A new run in a folder whose logs outlived their checkpoint (a run stopped before its first
    // save, or a checkpoint removed): its rows would mix with this run's, and its numbered
    // checkpoints would be overwritten by this run's. Each moves to <name>.old (or .old.2, .old.3,
    // ... when an earlier move took that name).
    std::vector<std::string> earlier = {"log.txt", "steps.jsonl"};
    std::error_code ec;
    for (std::filesystem::directory_iterator it(config_.output_dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (is_numbered_checkpoint(name)) earlier.push_back(name);
    }
    std::sort(earlier.begin() + 2, earlier.end());
    for (const std::string& name : earlier) {
      const std::string path = config_.output_dir + "/" + name;
      if (!std::filesystem::exists(path, ec)) continue;
      std::string aside = path + ".old";
      for (int n = 2; std::filesystem::exists(aside, ec); ++n) aside = fmt::format("{}.old.{}", path, n);
      std::filesystem::rename(path, aside, ec);
      BAM_CHECK(!ec, "{}: a new run cannot move the earlier run's file aside to {}: {}", path, aside, ec.message());
      std::printf("note: %s belongs to an earlier run without a checkpoint here: moved to %s\n", path.c_str(),
                  aside.c_str());
    }
  }
  check_ranks_agree();
  bool resumed_boxes = false;
  if (config_.use_ccrop) {
    // The boxes start as the whole image (or as the checkpoint left them).
    resumed_boxes = !resumed_boxes_.empty();
    use_object_boxes(resumed_boxes ? std::move(resumed_boxes_) : std::vector<data::ObjectBox>(data_->images()->size()),
                     state_.epoch);
    if (state_.boxes_due_after_epoch >= 0) renew_boxes_left_by_stop();  // (collective: after the check)
  }
  if (result.resumed) restore_lost_epoch_row();  // after the check: it may run the (collective) kNN monitor
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
    // Named as a temporary file of this process: a run killed before removing it leaves a file the
    // next start sweeps (remove_abandoned_temporary_files), not a checkpoint-sized stray.
    const std::string probe = fmt::format("{}/checkpoint.timing.tmp.{}", config_.output_dir, ::getpid());
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
    append_before_training_row(knn);
  }
  if (fit) {
    const int64_t steps = data_->steps_per_epoch();
    requested_reg_warmup_epochs_ = config_.reg_warmup_epochs;
    const int64_t requested_epochs = config_.epochs;
    EpochEndWork work = epoch_end_work();
    work.box_schedule_epochs = requested_epochs;  // the box updates keep --epochs' proportions
    use_fitted_steps(bam::steps_within(work, budget_seconds - seconds_since(run_start_), step_seconds, 0), true);
    std::printf(
        "Measured %.3f s per step: %lld steps (%.2f epochs of %lld steps) fit the %g-minute budget; "
        "warm-up %lld steps\n",
        step_seconds, static_cast<long long>(config_.max_steps), static_cast<double>(config_.max_steps) / steps,
        static_cast<long long>(steps), config_.time_budget_minutes, static_cast<long long>(config_.warmup_steps));
    if (config_.use_ccrop)
      std::printf("(counting a box update at %.3g s, measured on a sample of the images)\n", box_update_seconds_.mean);
    use_box_schedule(config_.ccrop_schedule().scaled(requested_epochs, config_.epochs), "the fitted");
    // Refit from real steps early in the warm-up, then about twenty times more in the run, each
    // from the mean of all the steps timed since then and the epoch-end work's mean cost so far
    // (first_refit_plan). The deadline only catches a far-off estimate.
    refit_ = first_refit_plan(config_.max_steps);
    budget_seconds_ = budget_seconds;
    budget_seconds *= 1.15;
  }
  std::optional<Clock::time_point> deadline;
  if (config_.time_budget_minutes > 0)
    deadline =
        run_start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(budget_seconds));

  if (config_.use_ccrop) print_contrastive_crop_plan(resumed_boxes);
  // epochs_in_schedule() is asked every epoch: a budget refit can change the schedule's length.
  const int64_t first_epoch = state_.epoch;
  for (int64_t epoch = state_.epoch; epoch < epochs_in_schedule(); ++epoch) {
    if (state_.global_step >= total_steps_) break;  // a resumed run whose schedule ended inside this epoch
    // The budget ran out, or a stop signal came, during the epoch-end work (or on the last step,
    // which train_epoch does not stop at): no next epoch. Its checkpoint is saved. A signal during
    // the start (calibration, the first kNN evaluation) stops the run before its first step.
    const StopDecision stop = stop_decision(epoch > first_epoch ? deadline : std::nullopt);
    if (stop.signal) {
      result.stopped_by_signal = stop.signal;
      if (epoch > first_epoch)
        std::printf(
            "Stopped by %s after epoch %lld, whose checkpoint is saved: run the same command again to continue\n",
            stop_signal_name(stop.signal), static_cast<long long>(epoch - 1));
      else
        std::printf("Stopped by %s before this run's first step: nothing new to save\n", stop_signal_name(stop.signal));
      break;
    }
    if (stop.budget) {
      result.stopped_by_budget = true;
      std::printf("Time budget of %g minutes spent at the end of epoch %lld; checkpoint saved, run again to continue\n",
                  config_.time_budget_minutes, static_cast<long long>(epoch - 1));
      break;
    }
    EpochStats stats = train_epoch(epoch, result, deadline);
    if (result.stopped_by_budget || result.stopped_by_signal) {
      save_timed(checkpoint_path());
      if (result.stopped_by_signal)
        std::printf("Stopped by %s at epoch %lld step %lld; checkpoint saved: run the same command again to continue\n",
                    stop_signal_name(result.stopped_by_signal), static_cast<long long>(epoch),
                    static_cast<long long>(step_in_epoch_));
      else
        std::printf(
            "Time budget of %g minutes spent at epoch %lld step %lld; checkpoint saved, run again to continue\n",
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
    // A stop signal seen at the epoch's end: the work left (the box update, the kNN evaluation, the
    // log row) goes to the next run of the command, so that a scheduler's grace period, short
    // against a pass of the model over every training image, is spent saving.
    int stop_at_end = 0;
    if (config_.use_ccrop && config_.ccrop_schedule().renews_after(epoch, epochs_in_schedule())) {
      if (const StopDecision s = stop_decision(std::nullopt); s.signal) {
        stop_at_end = s.signal;
        state_.boxes_due_after_epoch = epoch;  // in the checkpoints below; renew_boxes_left_by_stop
      } else {
        renew_object_boxes(epoch, &stats);
        box_update_seconds_.add(stats.box_seconds);
      }
    }
    // The epoch is saved before the kNN evaluation, which reads other folders and takes long: if it
    // fails (a folder gone, memory short) or the run is stopped then, the epoch's training is kept,
    // and so is its log row, which a resume writes if this run does not (restore_lost_epoch_row).
    const bool knn_due = knn_ && config_.knn_freq > 0 && ((epoch + 1) % config_.knn_freq == 0 || last);
    state_.last_epoch_row = log_row(stats, device_.is_cuda()).dump();
    state_.last_epoch_row_step = state_.global_step;
    state_.last_epoch_knn_due = knn_due;
    // The numbered copy first: a run stopped between the two saves resumes from the checkpoint
    // before, trains the epoch again and writes both (the other order lost the numbered one).
    if (config_.saveckp_freq > 0 && epoch % config_.saveckp_freq == 0)
      save_timed(fmt::format("{}/checkpoint{:04}.safetensors", config_.output_dir, epoch));
    save_timed(checkpoint_path());
    // (A stop asked for during the saves leaves the evaluation too; restore_lost_epoch_row writes
    // the row with it.)
    if (knn_due && stop_at_end == 0)
      if (const StopDecision s = stop_decision(std::nullopt); s.signal) stop_at_end = s.signal;
    if (stop_at_end != 0) {
      result.stopped_by_signal = stop_at_end;
      std::printf(
          "Stopped by %s after epoch %lld, whose checkpoint is saved; the next run of the same command does the "
          "rest of its end (%s%slog row)\n",
          stop_signal_name(stop_at_end), static_cast<long long>(epoch),
          state_.boxes_due_after_epoch >= 0 ? "box update, " : "", knn_due ? "kNN evaluation, " : "");
      break;
    }
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
    // (A run stopped before its first step has nothing to report on, unless an earlier one does.)
    if (writes_files() && (result.resumed || !result.step_losses.empty()))
      std::printf("Report: %s\n", write_training_report(config_.output_dir).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: could not write the report: %s\n", e.what());
  }
  return result;
}

}  // namespace bam
