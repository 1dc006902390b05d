// Flags of the official BAM scripts (main_pretrain.py, main_linear.py) that have no counterpart in
// bamtrain and bamprobe. They are accepted, so that an official command line runs as it is, and
// each one that asks for something prints what it means here (bamprobe checks --num_labels against
// its folders). Header-only, so that CLI11 is compiled only in each tool's own translation unit.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <string>

namespace bam::tool {

struct OfficialOnlyFlags {
  // both scripts
  bool wandb = false, debug = false;
  std::string wandb_key, dist_url;
  int64_t local_rank = 0;
  // main_pretrain.py
  bool compile = false;
  // main_linear.py
  bool augment = false, evaluate = false;
  int64_t imagenet_subset = 0, num_labels = 0;
};

enum class OfficialScript { pretrain, linear };

inline void add_official_only_flags(CLI::App& app, OfficialOnlyFlags& f, OfficialScript script) {
  const char* group = "Official flags with no effect here (accepted so that official command lines run)";
  auto boolean = [&](const char* name, bool& value, const char* help) {
    app.add_option(name, value, help)->type_name("BOOL")->group(group);
  };
  boolean("--wandb", f.wandb, "no Weights & Biases logging");
  app.add_option("--wandb_key", f.wandb_key, "unused")->group(group);
  boolean("--debug", f.debug, "unused");
  app.add_option("--dist_url", f.dist_url, "unused: the ranks meet at MASTER_ADDR:MASTER_PORT (torchrun's)")
      ->group(group);
  app.add_option("--local-rank,--local_rank", f.local_rank,
                 "a launched rank's GPU when LOCAL_RANK is not set (torch.distributed.launch's flag)");
  if (script == OfficialScript::pretrain) {
    boolean("--compile", f.compile, "torch.compile: the kernels here are compiled already");
  } else {
    boolean("--augment", f.augment, "unused (it names the official checkpoint file; see --linear_aug)");
    app.add_option("--imagenet_subset", f.imagenet_subset, "unused")->group(group);
    app.add_flag("--evaluate", f.evaluate, "unused: there is no linear-probe checkpoint to evaluate")->group(group);
    app.add_option("--num_labels", f.num_labels, "checked: must equal the number of class folders")->group(group);
  }
}

// Prints a note for each official flag that was given and has no effect here. (--local-rank is the
// tools' own: both run data-parallel.)
inline void check_official_only_flags(const CLI::App& app, const OfficialOnlyFlags& f) {
  auto note = [&](const char* flag, const char* what) {  // a flag this tool has, given on its command line
    const CLI::Option* option = app.get_option_no_throw(flag);
    if (option != nullptr && option->count() > 0) std::printf("note: %s %s\n", flag, what);
  };
  if (f.wandb) note("--wandb", "has no effect: there is no Weights & Biases logging; the results go to files");
  note("--wandb_key", "is not used (no Weights & Biases logging)");
  note("--debug", "has no effect");
  note("--dist_url", "has no effect: the ranks meet at MASTER_ADDR:MASTER_PORT, which torchrun sets");
  if (f.compile) note("--compile", "has no effect: there is no graph to compile, the kernels are native code");
  if (f.augment) note("--augment", "has no effect: --linear_aug true trains the probe on augmented views");
  note("--imagenet_subset", "has no effect: the probe trains on the whole train/ folder");
  note("--evaluate", "has no effect: there is no linear-probe checkpoint to evaluate; the probe trains");
  std::fflush(stdout);
}

}  // namespace bam::tool
