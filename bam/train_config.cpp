// TrainConfig validation, derived model configs and JSON conversion.
#include "bam/train_config.h"

#include <algorithm>
#include <cmath>

#include "engine/device.h"
#include "engine/error.h"

namespace bam {

void TrainConfig::validate_model() const {
  VitConfig v;
  BAM_CHECK(arch == "custom" || vit_preset(arch, &v),
            "--arch: unknown architecture '{}' (choose vit_tiny, vit_small, vit_base, or custom with "
            "--embed_dim/--depth/--num_heads)",
            arch);
  if (arch == "custom")
    BAM_CHECK(embed_dim > 0 && depth > 0 && num_heads > 0,
              "--arch custom needs --embed_dim, --depth and --num_heads (got {}, {}, {})", embed_dim, depth, num_heads);
  const int64_t dim = vit().embed_dim, heads = vit().num_heads;
  BAM_CHECK(dim % heads == 0, "--embed_dim {} is not divisible by --num_heads {}", dim, heads);
  BAM_CHECK(patch_size >= 1 && patch_size <= 64, "--patch_size must be in [1, 64], got {}", patch_size);
  BAM_CHECK(global_crops_size % patch_size == 0, "--global_crops_size {} is not a multiple of --patch_size {}",
            global_crops_size, patch_size);
  BAM_CHECK(local_crops_number == 0 || local_crops_size % patch_size == 0,
            "--local_crops_size {} is not a multiple of --patch_size {}", local_crops_size, patch_size);
  BAM_CHECK(drop_path_rate >= 0 && drop_path_rate < 1, "--drop_path_rate must be in [0, 1), got {}", drop_path_rate);
  BAM_CHECK(pos_embed == "learned" || pos_embed == "sincos", "--pos_embed must be learned or sincos, got '{}'",
            pos_embed);
  BAM_CHECK(pos_embed != "sincos" || dim % 4 == 0,
            "--pos_embed sincos splits the width in four (sine and cosine of rows and columns): --embed_dim {} is not "
            "divisible by 4",
            dim);
  BAM_CHECK(weight_init == "trunc_normal" || weight_init == "moco",
            "--weight_init must be trunc_normal or moco, got '{}'", weight_init);
  BAM_CHECK(out_dim >= 1 && hidden_dim >= 1 && n_layers >= 1, "--out_dim, --hidden_dim and --n_layers must be positive");
  BAM_CHECK(proj_act == "gelu" || proj_act == "relu", "--proj_act must be gelu or relu, got '{}'", proj_act);
}

void TrainConfig::validate_stored() const {
  validate_model();
  BAM_CHECK(epochs >= 1, "--epochs must be at least 1, got {}", epochs);
  BAM_CHECK(max_steps >= 0 && warmup_steps >= 0 && warmup_epochs >= 0 && reg_warmup_epochs >= 0,
            "--max_steps, --warmup_steps, --warmup_epochs and --reg_warmup_epochs must be non-negative");
  BAM_CHECK(loc_interval >= 1, "--loc_interval must be at least 1, got {}", loc_interval);
  BAM_CHECK(ccrop_scaled_from_epochs >= 0 && ccrop_scaled_to_epochs >= 0,
            "ccrop_scaled_from_epochs and ccrop_scaled_to_epochs must be non-negative");
}

void TrainConfig::validate() const {
  // Every real-valued setting is finite: an infinite --lr would make every weight NaN in one step
  // (and NaN already fails the range checks below, as any comparison with it is false).
  for (const auto& [flag, value] : {std::pair<const char*, double>{"--lr", lr},
                                    {"--min_lr", min_lr},
                                    {"--weight_decay", weight_decay},
                                    {"--weight_decay_end", weight_decay_end},
                                    {"--clip_grad", clip_grad},
                                    {"--reg", reg},
                                    {"--reg_final", reg_final},
                                    {"--temperature", temperature},
                                    {"--ccrop_alpha", ccrop_alpha},
                                    {"--eval_resize_ratio", eval_resize_ratio},
                                    {"--drop_path_rate", drop_path_rate}})
    BAM_CHECK(std::isfinite(value), "{} must be a finite number, got {}", flag, value);
  validate_model();
  BAM_CHECK(teacher_m >= 0 && teacher_m <= 1, "--teacher_m must be in [0, 1], got {}", teacher_m);
  BAM_CHECK(precision == "f32" || precision == "bf16" || precision == "fp16",
            "--precision must be f32, bf16 or fp16, got '{}'", precision);
  Device d;
  BAM_CHECK(parse_device(device, &d), "--device must be cpu, cuda or cuda:N, got '{}'", device);
  BAM_CHECK(precision != "fp16" || d.is_cuda(),
            "--precision fp16 runs on the GPU only (16-bit tensors with loss scaling); on the CPU use --precision f32 "
            "or bf16");
  BAM_CHECK(batch_size_per_gpu >= 2, "--batch_size_per_gpu must be at least 2 (positive masking needs two images), got {}",
            batch_size_per_gpu);
  // (A billion epochs stands for "until the time budget"; beyond it, the step counts of a large
  // folder could overflow.)
  BAM_CHECK(epochs >= 1 && epochs <= kMaxEpochs, "--epochs must be from 1 to {}, got {}", kMaxEpochs, epochs);
  BAM_CHECK(warmup_epochs >= 0 && warmup_epochs <= epochs,
            "--warmup_epochs must be in [0, --epochs] (--epochs {}), got {}{}", epochs, warmup_epochs,
            warmup_epochs == TrainConfig{}.warmup_epochs && epochs < warmup_epochs
                ? " (its default, as the official script's): give a shorter warm-up for a run this short"
                : "");
  BAM_CHECK(max_steps >= 0 && warmup_steps >= 0, "--max_steps and --warmup_steps must be non-negative");
  BAM_CHECK(lr > 0, "--lr must be positive, got {}", lr);
  BAM_CHECK(std::isfinite(lr * static_cast<double>(batch_size_per_gpu * world_size) / 256.0),
            "--lr {} times the global batch over 256 (the linear scaling rule) is not a finite number", lr);
  BAM_CHECK(min_lr >= 0, "--min_lr must be non-negative, got {}", min_lr);
  BAM_CHECK(optimizer == "adamw" || optimizer == "sgd" || optimizer == "lars",
            "--optimizer must be adamw, sgd or lars, got '{}'", optimizer);
  BAM_CHECK(weight_decay >= 0 && weight_decay_end >= 0, "--weight_decay and --weight_decay_end must be non-negative");
  BAM_CHECK(clip_grad >= 0, "--clip_grad must be non-negative (0 disables), got {}", clip_grad);
  BAM_CHECK(clip_mode == "global" || clip_mode == "param", "--clip_mode must be global or param, got '{}'", clip_mode);
  BAM_CHECK(freeze_last_layer >= 0, "--freeze_last_layer must be non-negative, got {}", freeze_last_layer);
  BAM_CHECK(reg > 0, "--reg must be positive, got {}", reg);
  BAM_CHECK(reg_final == -1 || reg_final > 0,
            "--reg_final must be positive (or -1, its default: the same as --reg), got {}", reg_final);
  BAM_CHECK(reg_warmup_epochs >= 0, "--reg_warmup_epochs must be non-negative, got {}", reg_warmup_epochs);
  BAM_CHECK(temperature > 0, "--temperature must be positive, got {}", temperature);
  BAM_CHECK(num_sink_iter >= 0, "--num_sink_iter must be non-negative, got {}", num_sink_iter);
  BAM_CHECK(global_crops_number >= 1, "--global_crops_number must be at least 1, got {}", global_crops_number);
  BAM_CHECK(local_crops_number >= 0, "--local_crops_number must be non-negative, got {}", local_crops_number);
  BAM_CHECK(target_crops_number >= 0 && target_crops() <= global_crops_number + local_crops_number,
            "--target_crops_number {} exceeds the {} crops", target_crops_number, global_crops_number + local_crops_number);
  // The target columns: every rank's target crops.
  const int64_t target_columns = target_crops() * batch_size_per_gpu * world_size;
  BAM_CHECK(top_k_sink >= 0 && top_k_sink <= target_columns,
            "--top_k_sink must be in [0, {}] (target crops x batch x processes), got {}", target_columns, top_k_sink);
  auto scale_ok = [](const std::pair<double, double>& s) { return s.first > 0 && s.first <= s.second && s.second <= 1; };
  BAM_CHECK(scale_ok(global_crops_scale), "--global_crops_scale must be 0 < min <= max <= 1, got {} {}",
            global_crops_scale.first, global_crops_scale.second);
  BAM_CHECK(scale_ok(local_crops_scale), "--local_crops_scale must be 0 < min <= max <= 1, got {} {}",
            local_crops_scale.first, local_crops_scale.second);
  BAM_CHECK(global_crops_size >= patch_size && local_crops_size >= 1, "crop sizes must hold at least one patch");
  BAM_CHECK(!data_path.empty(), "--data_path is required (a folder of images, or synthetic:N for generated data)");
  BAM_CHECK(loc_interval >= 1, "--loc_interval must be at least 1, got {}", loc_interval);
  BAM_CHECK(box_thresh >= 0 && box_thresh < 1, "--box_thresh must be in [0, 1), got {}", box_thresh);
  // Below 0.05 the Beta draws' U^(1/alpha) underflows to 0 (data/object_boxes.h).
  BAM_CHECK(ccrop_alpha >= 0.05, "--ccrop_alpha must be at least 0.05, got {}", ccrop_alpha);
  BAM_CHECK(ccrop_img_size >= 0, "--ccrop_img_size must be non-negative (0: --global_crops_size), got {}",
            ccrop_img_size);
  BAM_CHECK(!use_ccrop || box_image_size() % patch_size == 0,
            "--ccrop_img_size {} is not a multiple of --patch_size {}", box_image_size(), patch_size);
  BAM_CHECK(!use_ccrop || data_path.rfind("synthetic:", 0) != 0,
            "--use_ccrop true needs images to locate objects in: --data_path {} is generated data, which has no "
            "crops to place (pass --use_ccrop false)",
            data_path);
  BAM_CHECK(saveckp_freq >= 0, "--saveckp_freq must be non-negative, got {}", saveckp_freq);
  BAM_CHECK(num_workers >= 0 && num_workers <= 1024, "--num_workers must be from 0 to 1024, got {}", num_workers);
  BAM_CHECK(data_backend == "cpu" || data_backend == "gpu", "--data_backend must be cpu, gpu or auto, got '{}'",
            data_backend);
  BAM_CHECK(data_backend == "cpu" || device.rfind("cuda", 0) == 0,
            "--data_backend gpu needs --device cuda (the crops are made on the GPU), got --device {}", device);
  BAM_CHECK(knn_freq >= 0, "--knn_freq must be non-negative, got {}", knn_freq);
  BAM_CHECK(knn_train_fraction > 0 && knn_train_fraction <= 1, "--knn_train_fraction must be in (0, 1], got {}",
            knn_train_fraction);
  BAM_CHECK(knn_eval_fraction > 0 && knn_eval_fraction <= 1, "--knn_eval_fraction must be in (0, 1], got {}",
            knn_eval_fraction);
  BAM_CHECK(eval_resize_ratio >= 1 && eval_resize_ratio <= 4, "--eval_resize_ratio must be from 1 to 4, got {}",
            eval_resize_ratio);
  BAM_CHECK(log_freq >= 1, "--log_freq must be at least 1, got {}", log_freq);
  // At most a year: the deadline is kept in clock ticks, which a larger (or infinite) value overflows.
  BAM_CHECK(time_budget_minutes >= 0 && time_budget_minutes <= 525600,
            "--time_budget_minutes must be from 0 (none) to 525600 (a year), got {}", time_budget_minutes);
  BAM_CHECK(!fit_epochs_to_budget || time_budget_minutes > 0,
            "--fit_epochs_to_budget needs --time_budget_minutes");
  BAM_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank {} of {} processes is not a valid rank", rank,
            world_size);
}

VitConfig TrainConfig::vit() const {
  VitConfig v;
  if (arch != "custom") vit_preset(arch, &v);
  if (embed_dim > 0) v.embed_dim = embed_dim;
  if (depth > 0) v.depth = depth;
  if (num_heads > 0) v.num_heads = num_heads;
  v.patch_size = patch_size;
  v.img_size = global_crops_size;
  v.qkv_bias = qkv_bias;
  v.drop_path_rate = drop_path_rate;
  v.pos_embed = pos_embed;
  v.freeze_patch_embed = freeze_patch_embed;
  v.weight_init = weight_init;
  v.checkpoint_every = std::max<int64_t>(grad_checkpointing, 0);
  return v;
}

ProjectorConfig TrainConfig::projector() const {
  ProjectorConfig p;
  p.in_dim = vit().embed_dim;
  p.hidden_dim = hidden_dim;
  p.out_dim = out_dim;
  p.n_layers = n_layers;
  p.use_bn = proj_use_bn;
  p.last_bn = proj_last_bn;
  p.bias = proj_bias;
  p.activation = proj_act;
  return p;
}

// One table drives both directions of the JSON conversion.
// clang-format off
#define BAM_CONFIG_FIELDS(X)                                                                                \
  X(arch) X(patch_size) X(embed_dim) X(depth) X(num_heads) X(drop_path_rate) X(qkv_bias) X(pos_embed)      \
  X(freeze_patch_embed) X(weight_init)                                                                      \
  X(grad_checkpointing) X(out_dim) X(hidden_dim) X(n_layers) X(proj_use_bn) X(proj_last_bn) X(proj_bias)    \
  X(proj_act) X(teacher) X(teacher_m) X(precision) X(device) X(batch_size_per_gpu) X(epochs)                \
  X(warmup_epochs) X(max_steps) X(warmup_steps) X(lr) X(min_lr) X(optimizer) X(weight_decay)                \
  X(weight_decay_end) X(clip_grad) X(clip_mode) X(freeze_last_layer) X(reg) X(reg_final)                    \
  X(reg_warmup_epochs) X(temperature) X(num_sink_iter) X(top_k_sink) X(positive_masking)                    \
  X(target_crops_number) X(global_crops_number) X(local_crops_number) X(global_crops_scale)                 \
  X(local_crops_scale) X(global_crops_size) X(local_crops_size) X(use_ccrop) X(box_thresh) X(ccrop_alpha)  \
  X(loc_interval) X(ccrop_img_size) X(data_path) X(output_dir) X(saveckp_freq)                              \
  X(seed) X(num_workers) X(data_backend) X(knn_freq) X(knn_train_path) X(knn_val_path) X(eval_resize_ratio) \
  X(knn_train_fraction) X(knn_eval_fraction) X(eval_first) X(log_freq) X(time_budget_minutes)               \
  X(fit_epochs_to_budget) X(ccrop_scaled_from_epochs) X(ccrop_scaled_to_epochs) X(world_size)
// clang-format on

nlohmann::ordered_json TrainConfig::to_json() const {
  nlohmann::ordered_json j;
#define BAM_TO_JSON(field) j[#field] = field;
  BAM_CONFIG_FIELDS(BAM_TO_JSON)
#undef BAM_TO_JSON
  return j;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  TrainConfig c;
#define BAM_FROM_JSON(field) \
  if (j.contains(#field)) j.at(#field).get_to(c.field);
  BAM_CONFIG_FIELDS(BAM_FROM_JSON)
#undef BAM_FROM_JSON
  return c;
}

}  // namespace bam
