// Checkpoint save/load on top of the safetensors reader/writer.
#include "bam/checkpoint.h"

#include <cmath>

#include "engine/error.h"
#include "engine/random.h"
#include "engine/safetensors.h"
#include "models/vit.h"

namespace bam {
namespace {
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

void save_checkpoint(const std::string& path, const TrainConfig& config, const TrainState& state, const Module& student,
                     const Module* teacher, const Optimizer& optimizer, const Tensor& object_boxes) {
  NamedTensors tensors;
  for (const auto& [name, t] : student.state()) tensors.emplace_back("student." + name, t);
  if (teacher)
    for (const auto& [name, t] : teacher->state()) tensors.emplace_back("teacher." + name, t);
  for (const auto& [name, t] : optimizer.state()) tensors.emplace_back("optimizer." + name, t);
  if (object_boxes.defined()) tensors.emplace_back("ccrop.boxes", object_boxes);
  // The trainer stops a step whose loss or gradient is not finite before it changes the weights,
  // but an update can still overflow them (a learning rate near the float range): such weights are
  // never written, so the file already at `path` stays the last good one. (Checked on the host
  // copies the writer takes, so a GPU's tensors cross to the host once.)
  for (auto& [name, t] : tensors) t = t.detach().to(Device::cpu());
  if (const std::string bad = first_non_finite(tensors); !bad.empty())
    fail(
        "{}: not saved, as {} is NaN or infinite after step {} (the update overflowed the weights; lower --lr): "
        "the checkpoint already there, if any, is kept",
        path, bad, state.global_step);
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"bam_checkpoint", "1"},
      {"epoch", std::to_string(state.epoch)},
      {"step_in_epoch", std::to_string(state.step_in_epoch)},
      {"global_step", std::to_string(state.global_step)},
      {"num_images", std::to_string(state.num_images)},
      {"optimizer_steps", std::to_string(state.optimizer_steps)},
      {"loss_scale", fmt::format("{}", state.loss_scale)},
      {"loss_scale_clean_steps", std::to_string(state.loss_scale_clean_steps)},
      {"seed", std::to_string(config.seed)},
      {"args", config.to_json().dump()},
  };
  if (!state.last_epoch_row.empty()) {
    metadata.emplace("last_epoch_row", state.last_epoch_row);
    metadata.emplace("last_epoch_row_step", std::to_string(state.last_epoch_row_step));
    metadata.emplace("last_epoch_knn_due", std::string(state.last_epoch_knn_due ? "1" : "0"));
  }
  if (!state.epoch_so_far.empty()) metadata.emplace("epoch_so_far", state.epoch_so_far);
  if (state.boxes_due_after_epoch >= 0)
    metadata.emplace("boxes_due_after_epoch", std::to_string(state.boxes_due_after_epoch));
  save_safetensors(path, tensors, metadata);
}

LoadedCheckpoint load_checkpoint(const std::string& path) { return checkpoint_from_file(load_safetensors(path), path); }

LoadedCheckpoint checkpoint_from_file(SafetensorsFile file, const std::string& path) {
  LoadedCheckpoint out;
  out.metadata = file.metadata;
  out.path = path;
  BAM_CHECK(file.metadata.count("bam_checkpoint") && file.metadata.count("args"),
            "{}: not a bamtrain checkpoint (no bam_checkpoint/args metadata); an exported backbone cannot resume "
            "training",
            path);
  try {
    out.config = TrainConfig::from_json(nlohmann::json::parse(file.metadata.at("args")));
    out.state.epoch = std::stoll(file.metadata.at("epoch"));
    out.state.step_in_epoch = std::stoll(file.metadata.at("step_in_epoch"));
    out.state.global_step = std::stoll(file.metadata.at("global_step"));
    if (auto it = file.metadata.find("num_images"); it != file.metadata.end())  // absent in older ones
      out.state.num_images = std::stoll(it->second);
    out.state.optimizer_steps = std::stoll(file.metadata.at("optimizer_steps"));
    out.state.loss_scale = std::stod(file.metadata.at("loss_scale"));
    if (auto it = file.metadata.find("loss_scale_clean_steps"); it != file.metadata.end())
      out.state.loss_scale_clean_steps = std::stoll(it->second);  // absent in older checkpoints
    if (auto it = file.metadata.find("last_epoch_row"); it != file.metadata.end()) {  // absent in older ones too
      const nlohmann::json row = nlohmann::json::parse(it->second);
      BAM_CHECK(row.is_object() && row.contains("epoch") && row.at("epoch").is_number_integer(),
                "last_epoch_row is not a log row: {}", it->second);
      out.state.last_epoch_row = it->second;
      out.state.last_epoch_row_step = std::stoll(file.metadata.at("last_epoch_row_step"));
      out.state.last_epoch_knn_due = file.metadata.at("last_epoch_knn_due") == "1";
    }
    if (auto it = file.metadata.find("boxes_due_after_epoch"); it != file.metadata.end())
      out.state.boxes_due_after_epoch = std::stoll(it->second);
    if (auto it = file.metadata.find("epoch_so_far"); it != file.metadata.end()) {
      BAM_CHECK(nlohmann::json::parse(it->second).is_object(), "epoch_so_far is not an object: {}", it->second);
      out.state.epoch_so_far = it->second;
    }
  } catch (const std::exception& e) {
    fail("{}: corrupt checkpoint metadata: {}", path, e.what());
  }
  // The arguments it was trained with are read back as the run's (resume) or the model's
  // (bamprobe, export, report): a damaged file's would divide by zero or ask for any size.
  try {
    out.config.validate_stored();
  } catch (const std::exception& e) {
    fail("{}: corrupt checkpoint metadata: its args are not a valid run's: {}", path, e.what());
  }
  BAM_CHECK(std::isfinite(out.state.loss_scale) && out.state.loss_scale >= 0,
            "{}: corrupt checkpoint metadata: loss_scale {} is not 0 (none) or a finite scale", path,
            out.state.loss_scale);
  const TrainState& st = out.state;
  BAM_CHECK(st.epoch >= 0 && st.step_in_epoch >= 0 && st.global_step >= 0 && st.optimizer_steps >= 0 &&
                st.optimizer_steps <= st.global_step,
            "{}: corrupt checkpoint metadata: epoch {}, step {} of the next epoch, {} steps done, {} optimizer steps",
            path, st.epoch, st.step_in_epoch, st.global_step, st.optimizer_steps);
  // (bamtrain stops before a non-finite step reaches the weights, so only a diverged run of
  // another version, or a damaged file, holds one.)
  if (const std::string bad = first_non_finite(file.tensors); !bad.empty())
    fail(
        "{}: {} is NaN or infinite: the weights of a diverged run, which nothing should train on, evaluate or "
        "export; resume from an earlier checkpoint (checkpointNNNN.safetensors) or start again",
        path, bad);
  for (auto& [name, t] : file.tensors) {
    if (starts_with(name, "student."))
      out.student.emplace_back(name.substr(8), t);
    else if (starts_with(name, "teacher."))
      out.teacher.emplace_back(name.substr(8), t);
    else if (starts_with(name, "optimizer."))
      out.optimizer.emplace_back(name.substr(10), t);
    else if (name == "ccrop.boxes")
      out.object_boxes = t;
    else
      fail(
          "{}: unexpected tensor '{}' (a bamtrain checkpoint holds student.*, teacher.*, optimizer.* and "
          "ccrop.boxes)",
          path, name);
  }
  return out;
}

NamedTensors backbone_from_checkpoint(const LoadedCheckpoint& checkpoint, bool teacher) {
  const NamedTensors& source = teacher ? checkpoint.teacher : checkpoint.student;
  BAM_CHECK(!source.empty(), "{}: the checkpoint has no {} weights{}", checkpoint.path, teacher ? "teacher" : "student",
            teacher ? " (was it trained with --teacher true?)" : "");
  NamedTensors out;
  for (const auto& [name, t] : source)
    if (starts_with(name, "backbone.")) out.emplace_back(name.substr(9), t);
  const char* which = teacher ? "teacher" : "student";
  const VitConfig v = checkpoint.config.vit();
  // From the shapes, before any caller builds a model of the size the arguments ask for.
  if (const std::string mismatch = vit_weights_mismatch(out, v); !mismatch.empty())
    fail("{}: its {} backbone does not match its arguments: {}", checkpoint.path, which, mismatch);
  return out;
}

NamedTensors backbone_for_export(const LoadedCheckpoint& checkpoint, bool teacher) {
  NamedTensors out = backbone_from_checkpoint(checkpoint, teacher);
  try {
    Generator gen(0);
    VisionTransformer(checkpoint.config.vit(), &gen).load_state(out, true);
  } catch (const Error& e) {
    fail("{}: its {} backbone does not match its arguments: {}", checkpoint.path, teacher ? "teacher" : "student",
         e.what());
  }
  return out;
}

std::optional<std::string> architecture_mismatch(const TrainConfig& a, const TrainConfig& b) {
  auto va = a.vit(), vb = b.vit();
  auto pa = a.projector(), pb = b.projector();
  // The sizes come from --arch's preset or from the flags that override it: both are named, with the values.
  if (va.embed_dim != vb.embed_dim)
    return fmt::format("width (--arch/--embed_dim: {} in the checkpoint, {} here)", va.embed_dim, vb.embed_dim);
  if (va.depth != vb.depth)
    return fmt::format("depth (--arch/--depth: {} in the checkpoint, {} here)", va.depth, vb.depth);
  if (va.num_heads != vb.num_heads)
    return fmt::format("head count (--arch/--num_heads: {} in the checkpoint, {} here)", va.num_heads, vb.num_heads);
  if (a.patch_size != b.patch_size) return "--patch_size";
  if (a.global_crops_size != b.global_crops_size) return "--global_crops_size";
  if (a.qkv_bias != b.qkv_bias) return "--qkv_bias";
  if (a.pos_embed != b.pos_embed) return "--pos_embed";                             // a parameter, or a fixed table
  if (a.freeze_patch_embed != b.freeze_patch_embed) return "--freeze_patch_embed";  // optimizer state or none
  if (pa.out_dim != pb.out_dim) return "--out_dim";
  if (pa.hidden_dim != pb.hidden_dim) return "--hidden_dim";
  if (pa.n_layers != pb.n_layers) return "--n_layers";
  if (pa.use_bn != pb.use_bn) return "--proj_use_bn";
  if (pa.last_bn != pb.last_bn) return "--proj_last_bn";
  if (pa.bias != pb.bias) return "--proj_bias";
  if (pa.activation != pb.activation) return "--proj_act";
  if (a.teacher != b.teacher) return "--teacher";
  if (a.optimizer != b.optimizer) return "--optimizer";
  return std::nullopt;
}

}  // namespace bam
