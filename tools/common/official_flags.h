// Flags of the official BAM scripts (main_pretrain.py, main_linear.py) that have no counterpart in
// bamtrain and bamprobe. They are accepted, so that an official command line runs as it is, and
// each one that asks for something prints what it means here. One that would change the result
// (a multi-process launch of bamprobe) stops the tool before any work instead. Header-only, so
// that CLI11 is compiled only in each tool's own translation unit.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/error.h"

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
  int64_t imagenet_subset = 0, val_freq = 1, num_labels = 0;
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
  if (script == OfficialScript::pretrain) {
    app.add_option("--dist_url", f.dist_url, "unused: the ranks meet at MASTER_ADDR:MASTER_PORT (torchrun's)")
        ->group(group);
    app.add_option("--local-rank,--local_rank", f.local_rank,
                   "this process's GPU when LOCAL_RANK is not set (torch.distributed.launch's flag)")
        ->group(group);
    boolean("--compile", f.compile, "torch.compile: the kernels here are compiled already");
  } else {
    app.add_option("--dist_url", f.dist_url, "unused: one process runs on one device")->group(group);
    app.add_option("--local-rank,--local_rank", f.local_rank, "must be 0: one process runs on one device")
        ->group(group);
    boolean("--augment", f.augment, "unused (it names the official checkpoint file; see --linear_aug)");
    app.add_option("--imagenet_subset", f.imagenet_subset, "unused")->group(group);
    app.add_option("--val_freq", f.val_freq, "unused: the linear probe is validated after its last epoch")
        ->group(group);
    app.add_flag("--evaluate", f.evaluate, "unused: there is no linear-probe checkpoint to evaluate")->group(group);
    app.add_option("--num_labels", f.num_labels, "checked: must equal the number of class folders")->group(group);
  }
}

// Fails (naming the flag or variable) where an official flag asks for what is not implemented;
// prints a note for each other one that was given. `tool` names the program in the messages. A
// data-parallel tool (bamtrain) reads WORLD_SIZE and --local-rank itself; the others refuse them.
inline void check_official_only_flags(const CLI::App& app, const OfficialOnlyFlags& f, const char* tool,
                                      bool data_parallel = false) {
  const char* world = std::getenv("WORLD_SIZE");
  BAM_CHECK(data_parallel || world == nullptr || std::atoll(world) <= 1,
            "WORLD_SIZE={}: {} runs on one device per process; launched as {} processes it would do the same work "
            "{} times over. Run one process (unset WORLD_SIZE)",
            world ? world : "", tool, world ? world : "", world ? world : "");
  BAM_CHECK(data_parallel || f.local_rank == 0,
            "--local-rank {}: {} runs on one device per process; pick the GPU with --device cuda:{}", f.local_rank,
            tool, f.local_rank);
  auto note = [&](const char* flag, const char* what) {  // a flag this tool has, given on its command line
    const CLI::Option* option = app.get_option_no_throw(flag);
    if (option != nullptr && option->count() > 0) std::printf("note: %s %s\n", flag, what);
  };
  if (f.wandb) note("--wandb", "has no effect: there is no Weights & Biases logging; the results go to files");
  note("--wandb_key", "is not used (no Weights & Biases logging)");
  note("--debug", "has no effect");
  note("--dist_url", data_parallel ? "has no effect: the ranks meet at MASTER_ADDR:MASTER_PORT, which torchrun sets"
                                   : "has no effect: one process runs on one device");
  if (f.compile) note("--compile", "has no effect: there is no graph to compile, the kernels are native code");
  if (f.augment) note("--augment", "has no effect: --linear_aug true trains the probe on augmented views");
  note("--imagenet_subset", "has no effect: the probe trains on the whole train/ folder");
  note("--val_freq", "has no effect: the linear probe is validated after its last epoch");
  note("--evaluate", "has no effect: there is no linear-probe checkpoint to evaluate; the probe trains");
  std::fflush(stdout);
}

}  // namespace bam::tool
