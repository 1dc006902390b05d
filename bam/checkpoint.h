// bamtrain checkpoints as safetensors: student.<name> and teacher.<name> (parameters and
// buffers), optimizer.<param>.<slot> (moments), ccrop.boxes (ContrastiveCrop's object boxes, [images,
// 4] f32: top, left, bottom, right as fractions, when used), and in __metadata__ the epoch, step, optimizer
// steps, the RNG seed, every argument as JSON ("args"), the last epoch's log row, plus "format": "pt". Written
// atomically; `bamtool export` turns one into a timm-loadable backbone.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "bam/train_config.h"
#include "engine/module.h"
#include "engine/optim.h"
#include "engine/safetensors.h"

namespace bam {

struct TrainState {
  int64_t epoch = 0;            // completed epochs
  int64_t step_in_epoch = 0;    // steps done of the next epoch (a run stopped mid-epoch)
  int64_t global_step = 0;      // completed steps
  int64_t num_images = 0;       // the training images of the run (0: not recorded, older checkpoints)
  int64_t optimizer_steps = 0;
  double loss_scale = 0;        // fp16 dynamic loss scale (0 when unused)
  int64_t loss_scale_clean_steps = 0;  // clean steps since the scale last changed (fp16)
  // The log.txt row of the last epoch that ended, as it stood when the epoch was saved (before its
  // kNN evaluation), the step it ended at and whether an evaluation was due. A run stopped during
  // that evaluation never wrote the row; the resume writes it (Trainer::restore_lost_epoch_row).
  std::string last_epoch_row;  // JSON; empty before the first epoch ends (and in older checkpoints)
  int64_t last_epoch_row_step = -1;
  bool last_epoch_knn_due = false;
  // A run stopped inside an epoch: that epoch's sums so far (loss, lr, data wait, seconds... as
  // JSON, Trainer::EpochSums), from which a resume continues its log row. Empty otherwise (and in
  // older checkpoints, whose resumed row averages the resumed steps only).
  std::string epoch_so_far;
  // A run stopped at the end of an epoch after which ContrastiveCrop's boxes were due to be
  // located again: that epoch, whose update the resume does first (-1: none left).
  int64_t boxes_due_after_epoch = -1;
};

void save_checkpoint(const std::string& path, const TrainConfig& config, const TrainState& state, const Module& student,
                     const Module* teacher, const Optimizer& optimizer, const Tensor& object_boxes = Tensor());

struct LoadedCheckpoint {
  TrainConfig config;
  TrainState state;
  NamedTensors student, teacher, optimizer;
  Tensor object_boxes;  // ccrop.boxes (undefined when the run did not use ContrastiveCrop)
  std::map<std::string, std::string> metadata;
  std::string path;  // the file it was read from, for messages
};
LoadedCheckpoint load_checkpoint(const std::string& path);
// The same from a file already read (`path` names it in errors).
LoadedCheckpoint checkpoint_from_file(SafetensorsFile file, const std::string& path);

// The backbone of a checkpoint (student or teacher) under timm names, ready for
// timm.create_model(..., num_classes=0, checkpoint_path=...). Its main shapes are checked against
// the ViT the checkpoint's arguments describe (vit_weights_mismatch), before a caller builds one;
// the caller's strict load checks the rest.
NamedTensors backbone_from_checkpoint(const LoadedCheckpoint& checkpoint, bool teacher);

// The same for `bamtool export`, which builds no model of its own: also loaded strictly into the
// ViT the arguments describe (every name, shape and type), as timm's strict load will be, so a
// damaged checkpoint is refused rather than exported.
NamedTensors backbone_for_export(const LoadedCheckpoint& checkpoint, bool teacher);

// Names the first architecture flag that differs between a checkpoint and this run, if any.
std::optional<std::string> architecture_mismatch(const TrainConfig& saved, const TrainConfig& current);

// Throws, naming `path` and the flag, when this run's flags cannot resume the checkpoint trained
// with `saved`: another architecture, or another global batch (the schedule follows it).
void check_resumable(const TrainConfig& saved, const TrainConfig& current, const std::string& path);

// The same check from the checkpoint's header alone (no tensor is read), for a tool to run before
// it lists any images; nothing when `path` holds no bamtrain checkpoint whose arguments read back
// (loading it whole later says what is wrong).
void check_resumable_early(const TrainConfig& current, const std::string& path);

}  // namespace bam
