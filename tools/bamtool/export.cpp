// `bamtool export`: the backbone of a bamtrain checkpoint as a timm-compatible safetensors file.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "bam/checkpoint.h"
#include "engine/error.h"
#include "engine/safetensors.h"
#include "tools/bamtool/commands.h"

namespace bam::tool {
namespace {

struct ExportOptions {
  std::string checkpoint, output;
  bool teacher = false;
};

int run_export(const ExportOptions& o) {
  std::error_code ec;
  BAM_CHECK(!std::filesystem::equivalent(o.checkpoint, o.output, ec),
            "export: the output {} is the checkpoint itself; writing the backbone there would replace the training "
            "state (optimizer, projector, schedule position)",
            o.output);
  // timm's load_checkpoint reads a file as safetensors by its suffix alone (torch.load otherwise).
  BAM_CHECK(std::filesystem::path(o.output).extension() == ".safetensors",
            "export: the output {} must end in .safetensors: timm picks the reader by the suffix, and would read "
            "any other name as a pickled torch file",
            o.output);
  // Nor over another training checkpoint (export run/checkpoint0040.safetensors run/checkpoint.safetensors
  // would have replaced the run's resume point with a bare backbone).
  if (std::filesystem::exists(o.output, ec)) {
    bool is_checkpoint = false;
    try {
      is_checkpoint = load_safetensors_metadata(o.output).count("bam_checkpoint") > 0;
    } catch (const Error&) {  // not a safetensors file we can read: not a checkpoint either
    }
    BAM_CHECK(!is_checkpoint,
              "export: the output {} is a bamtrain checkpoint; writing the backbone there would replace its training "
              "state: give another name",
              o.output);
  }
  LoadedCheckpoint ck = load_checkpoint(o.checkpoint);
  NamedTensors backbone = backbone_for_export(ck, o.teacher);
  VitConfig v = ck.config.vit();
  save_safetensors(o.output, backbone,
                   {{"format", "pt"},
                    {"arch", ck.config.arch},
                    {"embed_dim", std::to_string(v.embed_dim)},
                    {"depth", std::to_string(v.depth)},
                    {"num_heads", std::to_string(v.num_heads)},
                    {"patch_size", std::to_string(v.patch_size)},
                    {"img_size", std::to_string(v.img_size)},
                    {"source", o.checkpoint + (o.teacher ? " (teacher)" : " (student)")},
                    {"epoch", std::to_string(ck.state.epoch)}});
  std::printf("wrote %zu backbone tensors (%s, epoch %lld) to %s\n", backbone.size(), o.teacher ? "teacher" : "student",
              static_cast<long long>(ck.state.epoch), o.output.c_str());
  // timm's constructor with the backbone's sizes: exact for every preset, size and patch (a model
  // name such as vit_small_patch16_224 exists for a few of them only, and fixes its heads). The
  // arguments where ours differ from timm's defaults are named (a missing qkv_bias=False made the
  // strict load fail on the qkv biases timm expects).
  std::string extra;
  if (v.in_chans != 3) extra += fmt::format(", in_chans={}", v.in_chans);
  if (v.mlp_ratio != 4.0) extra += fmt::format(", mlp_ratio={}", v.mlp_ratio);
  if (!v.qkv_bias) extra += ", qkv_bias=False";
  std::printf(
      "load with: m = timm.models.VisionTransformer(img_size=%lld, patch_size=%lld, embed_dim=%lld, depth=%lld, "
      "num_heads=%lld%s, num_classes=0); timm.models.load_checkpoint(m, '%s', strict=True)\n",
      static_cast<long long>(v.img_size), static_cast<long long>(v.patch_size), static_cast<long long>(v.embed_dim),
      static_cast<long long>(v.depth), static_cast<long long>(v.num_heads), extra.c_str(), o.output.c_str());
  return 0;
}

}  // namespace

Action add_export(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* sub = app.add_subcommand("export", "Write a checkpoint's backbone with timm names (strict-loadable by timm)");
  sub->add_option("checkpoint", o->checkpoint, "bamtrain checkpoint (.safetensors)")->required()->check(CLI::ExistingFile);
  sub->add_option("output", o->output, "output .safetensors")->required();
  sub->add_flag("--teacher", o->teacher, "export the EMA teacher instead of the student");
  return [o] { return run_export(*o); };
}

}  // namespace bam::tool
