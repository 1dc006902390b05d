// The bamtrain loop: schedules, forward over all crops, BAM loss, backward, clipping, optimizer,
// teacher EMA; progress lines, log.txt (one JSON object per epoch), atomic checkpoints with exact
// resume (also mid-epoch), the kNN monitor, a stop on a non-finite loss or gradient that leaves
// the last checkpoint intact, and a saved stop at the time budget or at Ctrl-C/SIGTERM. With world_size > 1
// it is one rank of a data-parallel run: its part of the whole batch's loss
// (bam_loss_across_ranks), the ranks' gradients added up, files written by rank 0.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bam/bam_model.h"
#include "bam/budget_fit.h"
#include "bam/checkpoint.h"
#include "bam/contrastive_crop.h"
#include "bam/knn.h"
#include "bam/schedules.h"
#include "bam/train_config.h"
#include "bam/train_data.h"
#include "engine/communicator.h"
#include "engine/grad_scaler.h"
#include "engine/optim.h"

namespace bam {

struct EpochStats {
  int64_t epoch = 0;
  // The loss, learning rate and weight decay are the means over the epoch's steps (as DINO's
  // MetricLogger logs them: with a warm-up or a cosine, the first and last steps' differ).
  double loss = 0, lr = 0, wd = 0, reg = 0;
  double target_entropy = 0, embedding_std = 0;
  double img_per_s = 0, data_wait_s = 0, seconds = 0;
  double host_waits_per_step = 0;  // on a GPU: times a step waited for the device (cuda::host_waits)
  double knn_top1 = -1, knn_top5 = -1;  // -1: not measured this epoch
  double teacher_knn_top1 = -1, teacher_knn_top5 = -1;  // with --teacher: the EMA teacher's backbone
  // ContrastiveCrop's boxes renewed after this epoch: their mean area (fraction of the image) and
  // the time it took (-1: not renewed)
  double box_area = -1, box_seconds = -1;
};

struct TrainResult {
  std::vector<double> step_losses;  // this run's steps, in order
  std::vector<EpochStats> epochs;   // this run's completed epochs
  bool resumed = false;
  bool stopped_by_budget = false;
  // SIGINT or SIGTERM (bam/stop_signals.h) stopped the run between two steps, its checkpoint saved;
  // 0 otherwise.
  int stopped_by_signal = 0;
};

// Evaluates a backbone for the kNN monitor (supplied by the caller, which owns the labelled data).
using KnnMonitor = std::function<KnnResult(const VisionTransformer& backbone)>;

class Trainer {
 public:
  Trainer(const TrainConfig& config, std::unique_ptr<TrainData> data, KnnMonitor knn = {});
  // Trains from output_dir/checkpoint.safetensors if it exists (same architecture flags
  // required), else from scratch. Throws bam::Error on a non-finite loss, or a non-finite gradient
  // outside fp16 (whose loss scaler skips such a step), before the weights change.
  // Stops early, with its checkpoint saved, at the time budget or at a stop signal.
  TrainResult run();

  BamModel& student() { return *student_; }
  BamModel* teacher() { return teacher_.get(); }
  std::string checkpoint_path() const;

 private:
  void resume_if_possible(TrainResult& result);
  void build_schedules();
  // The epochs the schedule spans (the last one may end early, at --max_steps).
  int64_t epochs_in_schedule() const;
  // Times a few steps of a throwaway copy of the model on real batches; returns seconds per step.
  double measure_step_seconds();
  // Fitting to a time budget: the most steps, counted from `from_step`, whose training time
  // (step_seconds each) plus the epoch-end work they bring (checkpoint saves, kNN evaluations,
  // ContrastiveCrop's box updates, at the measured costs) fits in `seconds` (bam/budget_fit.h).
  int64_t steps_within(double seconds, double step_seconds, int64_t from_step) const;
  // The work at the ends of epochs and what it has cost so far (0 where not measured yet): for the
  // budget fit and for the progress line's ETA.
  EpochEndWork epoch_end_work() const;
  // The kNN monitor on the student's backbone and, with --teacher, the teacher's (in eval mode, as
  // the official script reports both), and how long it took.
  struct KnnEvaluation {
    KnnResult student;
    std::optional<KnnResult> teacher;
    double seconds = 0;
    // Before the first step the teacher is the student's copy: its result is the student's, not
    // measured again (an evaluation of both costs about twice `seconds` later on).
    bool teacher_copied = false;
    std::string text() const;  // "top-1 ...  top-5 ... (teacher: ...)"
    void into(EpochStats* stats) const;
  };
  KnnEvaluation evaluate_knn();
  using Clock = std::chrono::steady_clock;
  static double seconds_since(Clock::time_point t);
  EpochStats train_epoch(int64_t epoch, TrainResult& result, const std::optional<Clock::time_point>& deadline);
  // ContrastiveCrop: the boxes the crops are placed by from epoch `epoch` on, to the loader (and
  // to the next checkpoint); and their renewal from the model's attention after `epoch`.
  void use_object_boxes(std::vector<data::ObjectBox> boxes, int64_t epoch);
  void renew_object_boxes(int64_t epoch, EpochStats* stats);
  std::vector<data::ObjectBox> locate_objects_in(const data::Dataset& images);  // with the teacher, else the student
  // Fitting to a time budget: one box update's time, from a sample of the images.
  double measure_box_update_seconds();
  void print_contrastive_crop_plan(bool resumed_boxes) const;
  void save(const std::string& path);
  static nlohmann::ordered_json log_row(const EpochStats& stats, bool cuda);  // an epoch's line of log.txt
  void append_log(const EpochStats& stats);
  void append_log_row(const nlohmann::ordered_json& row);  // one line of log.txt
  // The row of a kNN evaluation of the weights training starts from (marked before_training).
  void append_before_training_row(const KnnEvaluation& knn);
  // On resume: drops the rows of log.txt and steps.jsonl that an interrupted run wrote after its
  // checkpoint (those steps run again) and any line a crash cut off.
  void trim_logs_to_checkpoint();
  // On resume: a run stopped (killed, not failing) during the kNN evaluation after an epoch had
  // saved the epoch but not written its log row. The checkpoint holds the row; this writes it,
  // with the evaluation run again on the checkpoint's weights (they are the epoch's end) if one was
  // due. Rank 0 decides from log.txt; every rank evaluates (the monitor is collective).
  void restore_lost_epoch_row();
  // A run stopped at an epoch's end left the ContrastiveCrop box update due then: located now, from
  // the same weights, with its figures added to that epoch's row, and saved.
  void renew_boxes_left_by_stop();
  // Adds what was measured after the epoch's row was saved (a kNN evaluation, a box update) to
  // state_.last_epoch_row.
  void add_to_last_epoch_row(const EpochStats& measured);
  std::string memory_text() const;
  // Data parallelism: rank 0 alone prints, writes log.txt, steps.jsonl, checkpoints and the report.
  bool writes_files() const { return config_.rank == 0; }
  // After a resume: every rank must continue from the same step and weights (the same --output_dir).
  void check_ranks_agree();
  // On resume: a note naming the flags that change the training (the seed, the learning rate, the
  // loss, the crops...) where this run's differ from the checkpoint's run.
  void note_changed_recipe(const TrainConfig& saved) const;
  // Data parallelism: rank 0's value, on every rank. The step count fitted to the time budget
  // rests on each rank's own clock, so rank 0 decides it for all.
  int64_t decided_by_rank0(int64_t value);
  // Whether the run stops here, the same answer on every rank: the time budget is spent (rank 0's
  // clock decides), or a stop signal came (any rank's: each rank gets the launcher's, but a job
  // scheduler may signal one). A collective with world_size > 1.
  struct StopDecision {
    bool budget = false;
    int signal = 0;  // SIGINT or SIGTERM
  };
  StopDecision stop_decision(const std::optional<Clock::time_point>& deadline);

  TrainConfig config_;
  Communicator* group_ = nullptr;  // with world_size > 1: process_group()
  std::unique_ptr<TrainData> data_;
  KnnMonitor knn_;
  std::unique_ptr<BamModel> student_, teacher_;
  std::unique_ptr<Optimizer> optimizer_;
  DType compute_dtype_ = DType::f32;  // the autocast type of --precision (f32: autocast off)
  GradScaler scaler_{false};          // enabled for fp16
  CosineSchedule lr_schedule_, wd_schedule_, momentum_schedule_;
  int64_t total_steps_ = 0;  // the schedules' length: --max_steps or epochs x steps per epoch
  // Fitting to a time budget: at refit_.at_step the schedule is refitted to what is left of the
  // budget, from the mean time of the real steps after refit_.window_start (bam/budget_fit.h), so
  // that the run lands near the budget when the machine's speed drifts.
  RefitPlan refit_;
  Clock::time_point run_start_;
  double refit_window_seconds_ = 0;  // the window's steps, summed (epoch-end work left out)
  int64_t refit_window_steps_ = 0;
  double budget_seconds_ = 0;
  int64_t requested_reg_warmup_epochs_ = 0;  // --reg_warmup_epochs as given (a fit may shorten it)
  // The fitted step count (rank 0's) as --max_steps, with the epochs, --reg_warmup_epochs and
  // (set_warmup) a warm-up of a tenth that follow from it, and the schedules rebuilt.
  void use_fitted_steps(int64_t max_steps, bool set_warmup);
  void refit_to_budget();
  // ContrastiveCrop's schedule scaled from --epochs to the epochs of the plan just fitted (at the
  // fit before training, and again at the first refit while box_schedule_scalable), in the config
  // that the checkpoints keep; the later refits keep it. `plan` names the plan in the message.
  void use_box_schedule(const ContrastiveCropSchedule& schedule, const char* plan);
  // Whether the schedule in use is scaled and untouched at this epoch (ContrastiveCropSchedule::
  // untouched_at), so that the first refit may scale it again: to a schedule untouched here too.
  bool box_schedule_scalable() const;
  std::string box_renewals_text() const;  // the first few renewals to come, for messages
  std::string box_use_text() const;       // "from epoch N on", or "in no epoch of this run"
  // The cost of one occurrence of some epoch-end work: measured once before training, then
  // averaged with each occurrence during the run.
  struct MeanSeconds {
    double mean = 0;
    int64_t count = 0;
    void add(double seconds) { mean += (seconds - mean) / static_cast<double>(++count); }
  };
  // When fitting to a budget: a checkpoint save, a kNN evaluation, a box update (ContrastiveCrop).
  MeanSeconds save_seconds_, knn_seconds_;
  MeanSeconds box_update_seconds_;           // with --use_ccrop
  void save_timed(const std::string& path);  // save(), its time added to save_seconds_
  TrainState state_;
  int64_t step_in_epoch_ = 0;  // steps of state_.epoch already done (mid-epoch resume)
  // The running sums of the epoch in progress, for its log row. A run stopped inside an epoch keeps
  // them in its checkpoint (TrainState::epoch_so_far), so that the resumed run's row averages all
  // of the epoch's steps, not only its own.
  struct EpochSums {
    int64_t steps = 0;
    double loss = 0, target_entropy = 0, embedding_std = 0, lr = 0, wd = 0;
    double data_wait_s = 0, host_waits = 0, seconds = 0;
    // The epoch's BAM regularisation, fixed at its start (a budget refit may change the schedule
    // it came from before the epoch ends); negative when not known (older checkpoints).
    double reg = -1;
    std::string to_json() const;
    static EpochSums from_json(const std::string& text);  // throws on a malformed one
  };
  EpochSums epoch_sums_;
  bool steps_log_failed_ = false;                          // steps.jsonl could not be written once (warned)
  std::shared_ptr<const data::ObjectBoxes> object_boxes_;  // with --use_ccrop
  std::vector<data::ObjectBox> resumed_boxes_;             // from the checkpoint, until run() uses them
  Device device_;
};

}  // namespace bam
