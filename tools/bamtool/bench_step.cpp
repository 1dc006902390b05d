// `bamtool bench-step`: times one whole BAM training step (forward over all crops, projector, loss,
// backward, clipping, AdamW) on synthetic inputs and reports the median step time, images/s,
// achieved TFLOP/s and peak memory: how we hold the engine against PyTorch on the same work.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "bam/bam_loss.h"
#include "bam/bam_model.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/grad_scaler.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/gemm.h"
#include "tools/bamtool/commands.h"
#include "tools/common/device_choice.h"
#include "tools/common/kernel_profile.h"

namespace bam::tool {
namespace {

struct BenchOptions {
  std::string device = "cpu", precision = "f32", arch = "vit_small";
  int64_t embed_dim = 0, depth = 0, num_heads = 0, patch_size = 16, batch = 256, global_crops = 2, local_crops = 6;
  int64_t global_size = 224, local_size = 96, out_dim = 4096, hidden_dim = 4096, steps = 10, warmup = 2;
  int64_t profile = 0;  // steps run under the CUPTI kernel profile after the timed ones
  bool tf32 = false;
  bool recompute_gelu = false;
  int64_t grad_checkpointing = 0;  // > 0: the ViT blocks in checkpointed segments of this many
};

// Multiply-add FLOPs (x2) of one image's forward pass through the ViT at side `size`.
double vit_forward_flops(const VitConfig& v, int64_t size) {
  const double E = static_cast<double>(v.embed_dim), P = static_cast<double>(v.patch_size);
  const double patches = static_cast<double>((size / v.patch_size) * (size / v.patch_size)), N = patches + 1;
  double flops = 2 * patches * (v.in_chans * P * P) * E;           // patch embedding
  double block = 2 * N * E * 3 * E                                 // qkv
                 + 2 * 2 * N * N * E                               // q k^T and attention-weighted v
                 + 2 * N * E * E                                   // output projection
                 + 2 * 2 * N * E * (v.mlp_ratio * E);              // fc1 and fc2
  return flops + v.depth * block;
}

double projector_forward_flops(const ProjectorConfig& p) {
  double flops = 0;
  for (int64_t i = 0; i < p.n_layers; ++i) {
    double in = i == 0 ? p.in_dim : p.hidden_dim, out = i == p.n_layers - 1 ? p.out_dim : p.hidden_dim;
    flops += 2 * in * out;
  }
  return flops;
}

int run_bench(const BenchOptions& o) {
  const std::string device_name = tool::resolve_device(o.device);
  const Device device = tool::open_device(device_name);
  // auto as bamtrain resolves it: bf16 on a GPU, f32 on the CPU.
  const std::string precision = tool::resolve_precision(o.precision, device_name);
  const DType compute = precision_dtype(precision);
  BAM_CHECK(compute != DType::f16 || device.is_cuda(),
            "--precision {}: fp16 runs on the GPU only; on the CPU use --precision f32 or bf16", precision);
  BAM_CHECK(o.profile == 0 || device.is_cuda(), "--profile: the kernel profile needs --device cuda");
#ifdef BAM_WITH_CUDA
  cuda_kernels::gemm_allow_tf32(o.tf32);
#endif
  VitConfig vit;
  if (o.arch != "custom") BAM_CHECK(vit_preset(o.arch, &vit), "--arch: unknown '{}'", o.arch);
  if (o.embed_dim > 0) vit.embed_dim = o.embed_dim;
  if (o.depth > 0) vit.depth = o.depth;
  if (o.num_heads > 0) vit.num_heads = o.num_heads;
  vit.patch_size = o.patch_size;
  vit.img_size = o.global_size;
  vit.recompute_gelu = o.recompute_gelu;
  vit.checkpoint_every = o.grad_checkpointing;
  BAM_CHECK(vit.embed_dim % vit.num_heads == 0, "--embed_dim {} is not divisible by --num_heads {}", vit.embed_dim,
            vit.num_heads);
  BAM_CHECK(o.global_size % o.patch_size == 0 && (o.local_crops == 0 || o.local_size % o.patch_size == 0),
            "crop sizes must be multiples of --patch_size {}", o.patch_size);
  ProjectorConfig proj;
  proj.in_dim = vit.embed_dim;
  proj.hidden_dim = o.hidden_dim;
  proj.out_dim = o.out_dim;

  Generator gen(0);
  BamModel model(vit, proj, &gen);
  model.to(device);
  AdamW optimizer(make_param_groups(model.named_parameters()));
  optimizer.set_lr(1e-4);
  optimizer.set_weight_decay(0.04);
  std::vector<Tensor> groups = {randn({o.global_crops * o.batch, 3, o.global_size, o.global_size}, {}, &gen)};
  if (o.local_crops > 0) groups.push_back(randn({o.local_crops * o.batch, 3, o.local_size, o.local_size}, {}, &gen));
  for (Tensor& g : groups) g = g.to(device);
  BamLossOptions loss_options;
  loss_options.n_global = o.global_crops;
  loss_options.n_local = o.local_crops;
  loss_options.target_crops = o.global_crops;

  GradScaler scaler(compute == DType::f16);
  auto step = [&] {
    Tensor z;
    {
      AutocastGuard autocast(compute);  // the model under autocast; the loss in f32 (as the peer)
      z = model.forward(groups);
    }
    BamLossResult r = bam_loss(z, 0.05, loss_options);
    optimizer.zero_grad();
    scaler.scale_loss(r.loss).backward();
    // As bamtrain's step: unscale and clip, then one read of the loss and fp16's overflow check
    // (the step's one wait on CUDA), then the update unless a gradient overflowed.
    std::vector<Tensor> values = {r.loss};
    if (Tensor sum_of_squares = scaler.unscale_queued(model.parameters()); sum_of_squares.defined())
      values.push_back(sum_of_squares);
    clip_grad_norm(model.parameters(), 3.0);
    const std::vector<double> read = read_scalars(values);
    const bool finite = read.size() < 2 || std::isfinite(read[1]);
    if (finite) optimizer.step();
    scaler.update(finite);
    return read[0];
  };
  std::string where =
      device.is_cuda() ? cuda::device_description(device.index)
                       : fmt::format("{} threads, GEMM {}", cpu::num_threads(),
                                     compute == DType::bf16 ? cpu::gemm_bf16_kernel_name() : cpu::gemm_kernel_name());
  int64_t params = 0;
  for (auto& p : model.parameters()) params += p.numel();
  std::printf(
      "bench-step: ViT %lld/%lld/%lld patch %lld, projector %lld-%lld, B=%lld, %lldx%lld + %lldx%lld crops, "
      "%s %s, %s, %.1fM parameters\n",
      static_cast<long long>(vit.embed_dim), static_cast<long long>(vit.depth), static_cast<long long>(vit.num_heads),
      static_cast<long long>(vit.patch_size), static_cast<long long>(o.hidden_dim), static_cast<long long>(o.out_dim),
      static_cast<long long>(o.batch), static_cast<long long>(o.global_crops), static_cast<long long>(o.global_size),
      static_cast<long long>(o.local_crops), static_cast<long long>(o.local_size), device_name.c_str(),
      precision.c_str(), where.c_str(), params / 1e6);
  if (o.recompute_gelu) std::printf("bench-step: the MLPs recompute their GELU in backward (--recompute_gelu)\n");
  if (o.grad_checkpointing > 0)
    std::printf(
        "bench-step: the ViT blocks recompute their activations in backward, in segments of %lld "
        "(--grad_checkpointing)\n",
        static_cast<long long>(o.grad_checkpointing));
  for (int64_t i = 0; i < o.warmup; ++i) step();
  reset_cpu_peak_bytes();
  if (device.is_cuda()) cuda::reset_peak_memory(device.index);
  std::vector<double> times;
  double loss = 0;
  const int64_t waits_before = cuda::host_waits();
  const int64_t skipped_before = scaler.enabled() ? scaler.skipped_steps() : 0;
  for (int64_t i = 0; i < o.steps; ++i) {
    auto start = std::chrono::steady_clock::now();
    loss = step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double per_image = 3 * (o.global_crops * (vit_forward_flops(vit, o.global_size) + projector_forward_flops(proj)) +
                                o.local_crops * (vit_forward_flops(vit, o.local_size) + projector_forward_flops(proj)));
  const double images_per_s = o.batch / median;
  std::printf("| metric | value |\n|---|---|\n");
  std::printf("| median step | %.1f ms (min %.1f, max %.1f, %lld steps) |\n", 1e3 * median, 1e3 * times.front(),
              1e3 * times.back(), static_cast<long long>(o.steps));
  std::printf("| images/s | %.1f |\n", images_per_s);
  std::printf("| training FLOP per image | %.2f GFLOP (3x forward) |\n", per_image / 1e9);
  std::printf("| achieved | %.3f TFLOP/s |\n", per_image * images_per_s / 1e12);
  if (device.is_cuda()) {
    std::printf("| peak memory | %.2f GiB (device) |\n",
                cuda::memory_stats(device.index).peak_bytes_in_use / 1073741824.0);
    // Each wait drains the stream: the one read of the loss (and overflow check) is all a step needs.
    std::printf("| host waits per step | %.1f |\n",
                static_cast<double>(cuda::host_waits() - waits_before) / static_cast<double>(o.steps));
  } else
    std::printf("| peak memory | %.2f GiB (host) |\n", cpu_peak_bytes() / 1073741824.0);
  std::printf("| last loss | %.4f |\n", loss);
  if (scaler.enabled())
    // Of the timed steps only: a skipped step does no optimizer update, and is quicker.
    std::printf("| loss scale | %.0f (%lld of the %lld timed steps skipped) |\n", scaler.scale(),
                static_cast<long long>(scaler.skipped_steps() - skipped_before), static_cast<long long>(o.steps));
  // The table is out before CUPTI is loaded: a profiler that crashes or hangs cannot take it along
  // (stdout is a file under gpu-check, so it would still be buffered).
  std::fflush(stdout);
  if (o.profile > 0) {
    KernelProfile profile;
    std::string why;
    if (!profile.start(&why)) {
      std::printf("\nkernel profile: not available: %s\n", why.c_str());
      return 0;
    }
    for (int64_t i = 0; i < o.profile; ++i) step();
    print_kernel_profile(profile.stop(), static_cast<int>(o.profile), 1e3 * median, 30);
  }
  return 0;
}

}  // namespace

Action add_bench_step(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench-step", "Time one full BAM training step on synthetic inputs");
  sub->add_option("--device", o->device, "cpu | cuda | cuda:N | auto")->default_val(o->device);
  sub->add_option("--precision", o->precision,
                  "f32 | bf16 | fp16 | auto (bf16 on a GPU or a CPU with bf16 dot products, else f32)")
      ->default_val(o->precision);
  sub->add_option("--arch", o->arch, "vit_tiny | vit_small | vit_base | custom")->default_val(o->arch);
  sub->add_option("--embed_dim", o->embed_dim, "ViT width (overrides --arch)")->check(positive_number);
  sub->add_option("--depth", o->depth, "ViT depth (overrides --arch)")->check(positive_number);
  sub->add_option("--num_heads", o->num_heads, "heads (overrides --arch)")->check(positive_number);
  sub->add_option("--patch_size", o->patch_size, "patch size")->default_val(o->patch_size)->check(positive_number);
  sub->add_option("--batch", o->batch, "images per step")->default_val(o->batch)->check(CLI::Range(2, 1 << 20));
  sub->add_option("--global_crops", o->global_crops, "global crops")
      ->default_val(o->global_crops)
      ->check(positive_number);
  sub->add_option("--local_crops", o->local_crops, "local crops")
      ->default_val(o->local_crops)
      ->check(non_negative_number);
  sub->add_option("--global_size", o->global_size, "global crop side")
      ->default_val(o->global_size)
      ->check(positive_number);
  sub->add_option("--local_size", o->local_size, "local crop side")->default_val(o->local_size)->check(positive_number);
  sub->add_option("--out_dim", o->out_dim, "projector output")->default_val(o->out_dim)->check(positive_number);
  sub->add_option("--hidden_dim", o->hidden_dim, "projector hidden")
      ->default_val(o->hidden_dim)
      ->check(positive_number);
  sub->add_option("--steps", o->steps, "timed steps")->default_val(o->steps)->check(positive_number);
  sub->add_option("--warmup", o->warmup, "untimed steps first")->default_val(o->warmup)->check(non_negative_number);
  sub->add_option("--profile", o->profile,
                  "after the timed steps, run this many under a CUPTI kernel profile and "
                  "print the kernels by time (CUDA)")
      ->default_val(o->profile)
      ->check(non_negative_number);
  sub->add_flag("--tf32", o->tf32, "let f32 matmuls use TF32 tensor cores (CUDA)");
  sub->add_flag("--recompute_gelu", o->recompute_gelu,
                "keep only fc1's output in each MLP and recompute the GELU in backward (less memory)");
  sub->add_option("--grad_checkpointing", o->grad_checkpointing,
                  "checkpoint the ViT blocks in segments of N: they recompute their activations in backward (0: off)")
      ->check(non_negative_number);
  return [o] { return run_bench(*o); };
}

}  // namespace bam::tool
