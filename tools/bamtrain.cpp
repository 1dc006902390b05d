// bamtrain: self-supervised pretraining of a ViT with the BAM objective. Flags follow the official
// BAM script (main_pretrain.py); the run prints every argument, then trains, resuming from
// <output_dir>/checkpoint.safetensors when it exists. Ctrl-C stops it after a saved step.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "bam/output_dir.h"
#include "bam/stop_signals.h"
#include "bam/trainer.h"
#include "engine/communicator.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/host_allocator.h"
#include "tools/common/device_choice.h"
#include "tools/common/environment.h"
#include "tools/common/flag_checks.h"
#include "tools/common/knn_monitor.h"
#include "tools/common/launcher.h"
#include "tools/common/official_flags.h"
#include "tools/common/rank_group.h"

namespace {

void add_flags(CLI::App& app, bam::TrainConfig& c, std::vector<double>& global_scale, std::vector<double>& local_scale,
               bool& use_fp16) {
  auto boolean = [&](const char* name, bool& value, const char* help) {
    app.add_option(name, value, help)->type_name("BOOL")->default_val(value ? "true" : "false");
  };
  // model
  app.add_option("--arch", c.arch, "vit_tiny | vit_small | vit_base | custom")->default_val(c.arch);
  app.add_option("--patch_size", c.patch_size, "ViT patch size (4, 8, 16, ...)")->default_val(c.patch_size);
  app.add_option("--embed_dim", c.embed_dim, "ViT width (overrides the --arch preset; 0: the preset's)")
      ->check(bam::tool::non_negative_number);
  app.add_option("--depth", c.depth, "number of ViT blocks (overrides the preset; 0: the preset's)")
      ->check(bam::tool::non_negative_number);
  app.add_option("--num_heads", c.num_heads, "attention heads (overrides the preset; 0: the preset's)")
      ->check(bam::tool::non_negative_number);
  app.add_option("--drop_path_rate", c.drop_path_rate, "stochastic depth rate")->default_val(c.drop_path_rate);
  boolean("--qkv_bias", c.qkv_bias, "bias on the qkv projection");
  app.add_option("--pos_embed", c.pos_embed,
                 "position embedding: learned (timm's) | sincos (the official BAM ViT's fixed 2-D sine-cosine table)")
      ->default_val(c.pos_embed);
  boolean("--freeze_patch_embed", c.freeze_patch_embed,
          "keep the patch projection at its random initialisation (the official BAM ViT does)");
  app.add_option("--weight_init", c.weight_init,
                 "ViT block weights: trunc_normal (timm's, std 0.02) | moco (xavier-uniform, the official BAM ViT's)")
      ->default_val(c.weight_init);
  app.add_option("--grad_checkpointing", c.grad_checkpointing,
                 "activation checkpointing: the ViT blocks in segments of N that recompute their activations in "
                 "backward (less memory, one more forward; 0 or negative: off)")
      ->default_val(c.grad_checkpointing);
  // projector
  app.add_option("--out_dim", c.out_dim, "projector output width")->default_val(c.out_dim);
  app.add_option("--hidden_dim", c.hidden_dim, "projector hidden width")->default_val(c.hidden_dim);
  app.add_option("--n_layers", c.n_layers, "projector Linear layers")->default_val(c.n_layers);
  boolean("--proj_use_bn", c.proj_use_bn, "BatchNorm between projector layers");
  boolean("--proj_last_bn", c.proj_last_bn, "affine-free BatchNorm on the projector output");
  app.add_option("--proj_act", c.proj_act, "projector activation: gelu | relu")->default_val(c.proj_act);
  boolean("--proj_bias", c.proj_bias, "bias in the projector's Linear layers");
  // teacher
  boolean("--teacher", c.teacher, "momentum (EMA) teacher provides the target");
  app.add_option("--teacher_m", c.teacher_m, "initial teacher momentum (cosine to 1)")->default_val(c.teacher_m);
  // precision, device
  app.add_option(
         "--precision", c.precision,
         "f32 | bf16 | fp16 (CUDA only) | auto (bf16 on CUDA and on CPUs with AMX-BF16 or AVX-512 BF16, else f32)")
      ->default_val(c.precision);
  app.add_option("--use_fp16", use_fp16,
                 "true: same as --precision fp16; false without --precision: f32 (the official flag, whose false is "
                 "full precision)")
      ->type_name("BOOL");
  app.add_option("--device", c.device, "cpu | cuda | cuda:N | auto (cuda when a GPU answers, else cpu)")
      ->default_val(c.device);
  // optimisation
  app.add_option("--batch_size_per_gpu", c.batch_size_per_gpu, "images per step (each gives every crop)")
      ->default_val(c.batch_size_per_gpu);
  app.add_option("--epochs", c.epochs, "training epochs")->default_val(c.epochs);
  app.add_option("--warmup_epochs", c.warmup_epochs, "linear learning-rate warm-up epochs")
      ->default_val(c.warmup_epochs);
  app.add_option("--max_steps", c.max_steps, "end the run (and its schedules) after this many steps (0: all epochs)");
  app.add_option("--warmup_steps", c.warmup_steps, "warm-up length in steps (overrides --warmup_epochs)");
  app.add_option("--lr", c.lr, "peak learning rate for a batch of 256 (scaled linearly)")->default_val(c.lr);
  app.add_option("--min_lr", c.min_lr, "final learning rate of the cosine schedule")->default_val(c.min_lr);
  app.add_option("--optimizer", c.optimizer, "adamw | sgd | lars")->default_val(c.optimizer);
  app.add_option("--weight_decay", c.weight_decay, "initial weight decay (cosine schedule)")
      ->default_val(c.weight_decay);
  app.add_option("--weight_decay_end", c.weight_decay_end, "final weight decay")->default_val(c.weight_decay_end);
  app.add_option("--clip_grad", c.clip_grad, "gradient clipping norm (0 disables)")->default_val(c.clip_grad);
  app.add_option("--clip_mode", c.clip_mode, "global (one norm over all parameters) | param (DINO: each tensor)")
      ->default_val(c.clip_mode);
  app.add_option("--freeze_last_layer", c.freeze_last_layer, "epochs during which the projector's last layer is frozen")
      ->default_val(c.freeze_last_layer);
  // BAM
  app.add_option("--reg", c.reg, "initial Sinkhorn entropy regularisation (eps)")->default_val(c.reg);
  app.add_option("--reg_final", c.reg_final, "final eps (default: --reg)");
  app.add_option("--reg_warmup_epochs", c.reg_warmup_epochs, "epochs over which eps moves from --reg to --reg_final")
      ->default_val(c.reg_warmup_epochs);
  app.add_option("--temperature", c.temperature, "source softmax temperature")->default_val(c.temperature);
  app.add_option("--num_sink_iter", c.num_sink_iter, "Sinkhorn iterations")->default_val(c.num_sink_iter);
  app.add_option("--top_k_sink", c.top_k_sink, "keep each target row's top-k entries (0: all)")
      ->default_val(c.top_k_sink);
  boolean("--positive_masking", c.positive_masking, "mask the views of the same image in the attention");
  app.add_option("--target_crops_number", c.target_crops_number, "crops used as targets (default: global crops)");
  // multi-crop
  app.add_option("--global_crops_number", c.global_crops_number, "global crops per image")
      ->default_val(c.global_crops_number);
  app.add_option("--local_crops_number", c.local_crops_number, "local crops per image")
      ->default_val(c.local_crops_number);
  app.add_option("--global_crops_scale", global_scale, "area range of global crops (two numbers)")->expected(2);
  app.add_option("--local_crops_scale", local_scale, "area range of local crops (two numbers)")->expected(2);
  app.add_option("--global_crops_size", c.global_crops_size, "global crop side in pixels")
      ->default_val(c.global_crops_size);
  app.add_option("--local_crops_size", c.local_crops_size, "local crop side in pixels")
      ->default_val(c.local_crops_size);
  // ContrastiveCrop
  boolean("--use_ccrop", c.use_ccrop,
          "ContrastiveCrop: centre the crops within each image's object box, located from the attention (the "
          "official script's default is true; this tool's is DESIGN.md's RandomResizedCrop)");
  app.add_option("--box_thresh", c.box_thresh, "ContrastiveCrop: attention threshold of the object boxes")
      ->default_val(c.box_thresh);
  app.add_option("--loc_interval", c.loc_interval,
                 "ContrastiveCrop: locate the boxes after every N-th epoch (from --warmup_epochs on)")
      ->default_val(c.loc_interval);
  app.add_option("--ccrop_alpha", c.ccrop_alpha, "ContrastiveCrop: Beta(alpha, alpha) of the crop centres")
      ->default_val(c.ccrop_alpha);
  app.add_option(
         "--ccrop_img_size", c.ccrop_img_size,
         "ContrastiveCrop: image side for locating the boxes (0: --global_crops_size; the official default is 224)")
      ->default_val(c.ccrop_img_size);
  // data, output, misc
  app.add_option("--data_path", c.data_path,
                 "training images: a folder (ImageFolder or flat), a file list (.txt), "
                 "or synthetic:N");
  app.add_option("--output_dir", c.output_dir, "checkpoints, log.txt and report go here")->default_val(c.output_dir);
  app.add_option("--saveckp_freq", c.saveckp_freq, "also keep checkpointNNNN every N epochs (0: never)")
      ->default_val(c.saveckp_freq);
  app.add_option("--seed", c.seed, "random seed")->default_val(c.seed);
  app.add_option("--num_workers", c.num_workers, "data loading threads (JPEG parsing and Huffman decoding for gpu)")
      ->default_val(c.num_workers);
  c.data_backend = "auto";
  app.add_option("--data_backend", c.data_backend,
                 "cpu | gpu | auto: where JPEGs are decoded and augmented (auto: gpu when training runs on a GPU)")
      ->default_val(c.data_backend);
  app.add_option("--knn_freq", c.knn_freq, "kNN monitor every N epochs (0: off)")->default_val(c.knn_freq);
  app.add_option("--knn_train_path", c.knn_train_path, "labelled ImageFolder for the kNN monitor's memory bank");
  app.add_option("--knn_val_path", c.knn_val_path, "labelled ImageFolder the kNN monitor classifies");
  app.add_option("--knn_train_fraction", c.knn_train_fraction,
                 "class-balanced fraction of --knn_train_path the monitor uses (the official default is 0.1)")
      ->default_val(c.knn_train_fraction);
  app.add_option("--knn_eval_fraction", c.knn_eval_fraction, "class-balanced fraction of --knn_val_path it classifies")
      ->default_val(c.knn_eval_fraction);
  boolean("--eval_first", c.eval_first, "one kNN evaluation before training");
  app.add_option("--eval_resize_ratio", c.eval_resize_ratio,
                 "kNN monitor transform: shorter side to size x ratio, then centre crop (1 for small images)")
      ->default_val(c.eval_resize_ratio);
  app.add_option("--log_freq", c.log_freq, "progress line every N steps")->default_val(c.log_freq);
  app.add_option("--time_budget_minutes", c.time_budget_minutes,
                 "stop after this many minutes with a checkpoint (0: train all epochs)");
  boolean("--fit_epochs_to_budget", c.fit_epochs_to_budget,
          "time a few steps first and set --max_steps so the whole schedule fits --time_budget_minutes "
          "(refitted about twenty times during the run from the real steps' times)");
}

}  // namespace

int main(int argc, char** argv) {
  bam::tune_host_allocator();
  CLI::App app{"bamtrain: BAM self-supervised pretraining of a Vision Transformer"};
  bam::TrainConfig config;
  // The tool's defaults where they differ from the library's (TrainConfig, which tests build on):
  // the GPU when one answers, with bf16 autocast (DESIGN.md section 3), as the official script
  // trains on the GPU in mixed precision; on a CPU, bf16 GEMM operands where it has bf16 dot
  // products, else f32 (tools/common/device_choice.h).
  config.device = "auto";
  config.precision = "auto";
  std::vector<double> global_scale, local_scale;
  bool use_fp16 = false;
  add_flags(app, config, global_scale, local_scale, use_fp16);
  bam::tool::OfficialOnlyFlags official_only;
  add_official_only_flags(app, official_only, bam::tool::OfficialScript::pretrain);
  std::string tool_name = "bamtrain";
  int stopped_by = 0;  // the stop signal that ended the run, once it is saved
  std::string nproc_text = "1";
  app.add_option("--nproc_per_node", nproc_text,
                 "start this many ranks of this command on this machine, as torchrun does (data parallelism over "
                 "its GPUs, one each, or its cores): a count, gpu (one per GPU), cpu (one per core) or auto (gpu "
                 "when training runs on a GPU, as --device auto does where one answers, else cpu)")
      ->default_val(nproc_text);
  bam::tool::require_plain_numbers(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::vector<std::string> created_output_dir;  // by this run, removed again while still empty if it fails
  try {
    bam::tool::check_environment_variables();
    if (global_scale.size() == 2) config.global_crops_scale = {global_scale[0], global_scale[1]};
    if (local_scale.size() == 2) config.local_crops_scale = {local_scale[0], local_scale[1]};
    // Data parallelism: --nproc_per_node, or torchrun's RANK/WORLD_SIZE/LOCAL_RANK (or
    // torch.distributed.launch's --local-rank); the other ranks print nothing but their errors.
    const bam::tool::RankLaunch ranks = bam::tool::read_rank_launch(
        "bamtrain", nproc_text, bam::tool::resolve_device(config.device),
        app.get_option("--local-rank")->count() > 0 ? std::optional<int64_t>(official_only.local_rank) : std::nullopt);
    const bam::LaunchEnvironment& launch = ranks.launch;
    tool_name = ranks.tool_name;
    config.world_size = launch.world_size;
    config.rank = launch.rank;
    if (!ranks.launcher) check_official_only_flags(app, official_only);  // the ranks say it
    // (Said once: by the launcher's ranks, not by the launcher too.)
    if (!config.use_ccrop && !ranks.launcher)
      for (const char* flag : {"--box_thresh", "--loc_interval", "--ccrop_alpha", "--ccrop_img_size"})
        if (app.get_option(flag)->count() > 0)
          std::printf(
              "note: %s is a ContrastiveCrop setting, and ContrastiveCrop is off: bamtrain's default is "
              "--use_ccrop false (DESIGN.md's RandomResizedCrop), the official script's is true; pass "
              "--use_ccrop true for the official recipe\n",
              flag);
    // Other settings of parts that are off, said rather than ignored in silence.
    if (config.knn_freq == 0 && !config.eval_first && !ranks.launcher)
      for (const char* flag : {"--knn_train_path", "--knn_val_path", "--knn_train_fraction", "--knn_eval_fraction"})
        if (app.get_option(flag)->count() > 0)
          std::printf(
              "note: %s is a kNN monitor setting, and the monitor is off (--knn_freq 0, its default, and no "
              "--eval_first): pass --knn_freq N to evaluate every N epochs\n",
              flag);
    if (config.local_crops_number == 0 && !ranks.launcher)
      for (const char* flag : {"--local_crops_scale", "--local_crops_size"})
        if (app.get_option(flag)->count() > 0)
          std::printf("note: %s is a local-crop setting, and there are none (--local_crops_number 0)\n", flag);
    if (use_fp16) {
      BAM_CHECK(app.get_option("--precision")->count() == 0 || config.precision == "fp16",
                "--use_fp16 true asks for fp16, --precision for {}: give one of them", config.precision);
      config.precision = "fp16";
    } else if (app.get_option("--use_fp16")->count() > 0 && app.get_option("--precision")->count() == 0)
      config.precision = "f32";
    const std::string asked_device = config.device;
    config.device = bam::tool::rank_device(launch, bam::tool::resolve_device(config.device));
    config.precision = bam::tool::resolve_precision(config.precision, config.device);
    config.data_backend = bam::tool::resolve_data_backend(config.data_backend, config.device);
    if (ranks.launcher) config.world_size = ranks.nproc_per_node;  // what the ranks will check
    config.validate();
    if (ranks.launcher) return bam::tool::run_local_ranks(ranks.nproc_per_node, argv);
    if (const std::string note = bam::tool::cpu_fallback_note(asked_device, config.device); !note.empty())
      std::printf("%s\n", note.c_str());
    if (launch.rank == 0) created_output_dir = bam::prepare_output_dir(config.output_dir);
    bam::tool::open_device(config.device);  // before the GPU loader and the model touch a device
    if (launch.distributed()) {
      bam::set_process_group(bam::tool::join_rank_group(launch, config.device));
      const int threads = bam::tool::share_cores_among_local_ranks(*bam::process_group());
      std::printf(
          "Data parallel: %s; each rank trains on %lld images of a global batch of %lld, with %d CPU "
          "thread%s\n",
          bam::process_group()->describe().c_str(), static_cast<long long>(config.batch_size_per_gpu),
          static_cast<long long>(config.batch_size_per_gpu * launch.world_size), threads, threads == 1 ? "" : "s");
    }
    const auto args = config.to_json();     // items() must not outlive the object it iterates
    for (const auto& [key, value] : args.items()) std::printf("%s: %s\n", key.c_str(), value.dump().c_str());
    std::fflush(stdout);
    // Refused before any images are listed: a monitor without folders, a checkpoint these flags
    // cannot resume.
    bam::tool::knn_monitor_folders(config);
    bam::check_resumable_early(config, config.output_dir + "/checkpoint.safetensors");
    auto data = bam::make_train_data(config);
    // Every rank runs the kNN monitor, on its part of the folders.
    bam::Trainer trainer(config, std::move(data), bam::tool::make_knn_monitor(config, bam::process_group()));
    // From here a first Ctrl-C or SIGTERM stops the run after the step in progress, saved.
    bam::install_stop_signal_handlers();
    bam::TrainResult result = trainer.run();
    if (bam::process_group()) bam::process_group()->finish();  // every rank done before any exits
    bam::set_process_group(nullptr);
    std::printf("Training %s.\n", result.stopped_by_signal   ? "stopped"
                                  : result.stopped_by_budget ? "paused (time budget)"
                                                             : "done");
    // A signal after the last step's check (during the final saves, the report, the ranks' finish)
    // still ends the process by it, as the handler's message promised.
    stopped_by = result.stopped_by_signal ? result.stopped_by_signal : bam::stop_signal();
  } catch (const std::exception& e) {  // bam::Error, and anything else a library throws
    std::fprintf(stderr, "%s: %s\n", tool_name.c_str(), e.what());
    bam::set_process_group(nullptr);  // before CUDA goes: NCCL aborts, the other ranks see us stop
    bam::remove_unused_output_dir(created_output_dir);  // a refused run leaves no empty folder
    return 1;
  }
  // Ended by the signal, as a shell or launcher expects of a process it interrupted (a script's
  // loop stops too), now that everything is saved.
  if (stopped_by != 0) bam::exit_by_signal(stopped_by);
  return 0;
}
