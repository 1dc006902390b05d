// Checkpoint save/load on top of the safetensors reader/writer.
#include "bam/checkpoint.h"

#include "engine/error.h"
#include "engine/safetensors.h"

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
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"bam_checkpoint", "1"},
      {"epoch", std::to_string(state.epoch)},
      {"step_in_epoch", std::to_string(state.step_in_epoch)},
      {"global_step", std::to_string(state.global_step)},
      {"optimizer_steps", std::to_string(state.optimizer_steps)},
      {"loss_scale", fmt::format("{}", state.loss_scale)},
      {"loss_scale_clean_steps", std::to_string(state.loss_scale_clean_steps)},
      {"seed", std::to_string(config.seed)},
      {"args", config.to_json().dump()},
  };
  save_safetensors(path, tensors, metadata);
}

LoadedCheckpoint load_checkpoint(const std::string& path) {
  SafetensorsFile file = load_safetensors(path);
  LoadedCheckpoint out;
  out.metadata = file.metadata;
  BAM_CHECK(file.metadata.count("bam_checkpoint") && file.metadata.count("args"),
            "{}: not a bamtrain checkpoint (no bam_checkpoint/args metadata); an exported backbone cannot resume "
            "training",
            path);
  try {
    out.config = TrainConfig::from_json(nlohmann::json::parse(file.metadata.at("args")));
    out.state.epoch = std::stoll(file.metadata.at("epoch"));
    out.state.step_in_epoch = std::stoll(file.metadata.at("step_in_epoch"));
    out.state.global_step = std::stoll(file.metadata.at("global_step"));
    out.state.optimizer_steps = std::stoll(file.metadata.at("optimizer_steps"));
    out.state.loss_scale = std::stod(file.metadata.at("loss_scale"));
    if (auto it = file.metadata.find("loss_scale_clean_steps"); it != file.metadata.end())
      out.state.loss_scale_clean_steps = std::stoll(it->second);  // absent in older checkpoints
  } catch (const std::exception& e) {
    fail("{}: corrupt checkpoint metadata: {}", path, e.what());
  }
  for (auto& [name, t] : file.tensors) {
    if (starts_with(name, "student."))
      out.student.emplace_back(name.substr(8), t);
    else if (starts_with(name, "teacher."))
      out.teacher.emplace_back(name.substr(8), t);
    else if (starts_with(name, "optimizer."))
      out.optimizer.emplace_back(name.substr(10), t);
    else if (name == "ccrop.boxes")
      out.object_boxes = t;
  }
  return out;
}

NamedTensors backbone_from_checkpoint(const LoadedCheckpoint& checkpoint, bool teacher) {
  const NamedTensors& source = teacher ? checkpoint.teacher : checkpoint.student;
  BAM_CHECK(!source.empty(), "the checkpoint has no {} weights{}", teacher ? "teacher" : "student",
            teacher ? " (was it trained with --teacher true?)" : "");
  NamedTensors out;
  for (const auto& [name, t] : source)
    if (starts_with(name, "backbone.")) out.emplace_back(name.substr(9), t);
  return out;
}

std::optional<std::string> architecture_mismatch(const TrainConfig& a, const TrainConfig& b) {
  auto va = a.vit(), vb = b.vit();
  auto pa = a.projector(), pb = b.projector();
  if (va.embed_dim != vb.embed_dim || va.depth != vb.depth || va.num_heads != vb.num_heads) return "--arch";
  if (a.patch_size != b.patch_size) return "--patch_size";
  if (a.global_crops_size != b.global_crops_size) return "--global_crops_size";
  if (a.qkv_bias != b.qkv_bias) return "--qkv_bias";
  if (pa.out_dim != pb.out_dim) return "--out_dim";
  if (pa.hidden_dim != pb.hidden_dim) return "--hidden_dim";
  if (pa.n_layers != pb.n_layers) return "--n_layers";
  if (pa.use_bn != pb.use_bn) return "--proj_use_bn";
  if (pa.last_bn != pb.last_bn) return "--proj_last_bn";
  if (pa.bias != pb.bias) return "--proj_bias";
  if (a.teacher != b.teacher) return "--teacher";
  if (a.optimizer != b.optimizer) return "--optimizer";
  return std::nullopt;
}

}  // namespace bam
