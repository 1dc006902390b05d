// Mixed precision on the GPU: the autocast policy's dtypes (16-bit matmuls and attention, f32
// residual stream, norms, loss and master weights), a forward that stays close to f32, and short
// training runs in bf16 and in fp16 (with loss scaling) that track the f32 run's loss step by step,
// and bamtrain's step waiting for the device once.
#include <cmath>
#include <filesystem>

#include "bam/bam_loss.h"
#include "bam/bam_model.h"
#include "bam/trainer.h"
#include "engine/autocast.h"
#include "engine/cuda.h"
#include "engine/grad_scaler.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {

struct TinySetup {
  VitConfig vit;
  ProjectorConfig proj;
  TinySetup() {
    vit.embed_dim = 64;
    vit.depth = 2;
    vit.num_heads = 2;  // head dim 32
    vit.patch_size = 4;
    vit.img_size = 16;
    proj.in_dim = 64;
    proj.hidden_dim = 128;
    proj.out_dim = 128;
  }
};

// Two global 16 px crops and two local 8 px crops of B images, fixed for the whole run.
std::vector<Tensor> fixed_batch(int64_t B) {
  Generator gen(7);
  return {randn({2 * B, 3, 16, 16}, {}, &gen).to(Device::cuda()), randn({2 * B, 3, 8, 8}, {}, &gen).to(Device::cuda())};
}

BamLossOptions loss_options() {
  BamLossOptions o;
  o.n_global = 2;
  o.n_local = 2;
  o.target_crops = 2;
  return o;
}

// The loss of each of `steps` AdamW steps from the same initial weights, computing in `compute`;
// *skipped counts the steps the fp16 loss scaler skipped (an overflow while the scale settles).
std::vector<double> train_losses(DType compute, int steps, int64_t* skipped = nullptr) {
  TinySetup s;
  Generator init(3);
  BamModel model(s.vit, s.proj, &init);
  model.to(Device::cuda());
  AdamW optimizer(make_param_groups(model.named_parameters()));
  optimizer.set_lr(1e-3);
  optimizer.set_weight_decay(0.04);
  GradScaler scaler(compute == DType::f16);
  std::vector<Tensor> batch = fixed_batch(32);
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) {
    Tensor z;
    {
      AutocastGuard autocast(compute);
      z = model.forward(batch);
    }
    BamLossResult r = bam_loss(z, 0.05, loss_options());
    optimizer.zero_grad();
    scaler.scale_loss(r.loss).backward();
    bool finite = scaler.unscale(model.parameters());
    if (finite) {
      clip_grad_norm(model.parameters(), 3.0);
      optimizer.step();
    }
    scaler.update(finite);
    losses.push_back(r.loss.item());
  }
  if (skipped) *skipped = scaler.skipped_steps();
  return losses;
}

}  // namespace

TEST_CASE("autocast bf16: 16-bit matmuls and attention, f32 stream, loss and master gradients") {
  TinySetup s;
  Generator init(3);
  BamModel model(s.vit, s.proj, &init);
  model.to(Device::cuda());
  std::vector<Tensor> batch = fixed_batch(8);
  Tensor z32 = model.forward(batch);
  Tensor z16, probs;
  {
    AutocastGuard autocast(DType::bf16);
    z16 = model.forward(batch);
    // The attention op receives 16-bit qkv: its probabilities come back in bf16.
    probs = model.backbone->last_attention(batch[0]);
    // The residual stream and the final norm stay f32.
    CHECK(model.backbone->forward(batch[0]).dtype() == DType::f32);
  }
  CHECK(probs.dtype() == DType::bf16);
  CHECK(autocast_dtype() == DType::f32);
  // bf16 keeps 8 bits of mantissa: the embeddings agree with f32 to about a percent.
  Tensor diff = sub(z16.to(DType::f32), z32.detach());
  double relative = std::sqrt(sum(mul(diff, diff)).item() / sum(mul(z32, z32)).item());
  MESSAGE("bf16 vs f32 embedding, relative L2 difference: " << relative);
  CHECK(relative < 0.03);

  BamLossResult r = bam_loss(z16, 0.05, loss_options());
  CHECK(r.loss.dtype() == DType::f32);
  r.loss.backward();
  for (const auto& [name, p] : model.named_parameters()) {
    CAPTURE(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().dtype() == DType::f32);  // the casts route gradients back to the f32 master weights
    CHECK(std::isfinite(sum(p.grad()).item()));
  }
}

TEST_CASE("checkpointed blocks recompute in the forward's autocast type, though backward runs outside it") {
  // Gradients of the master weights with and without --grad_checkpointing 1, under bf16 autocast,
  // with stochastic depth; backward runs after the guard has ended, as in the trainer. A
  // recomputation in f32 would give gradients about a percent away.
  int64_t held[2] = {0, 0};  // device bytes held between forward and backward: kept, checkpointed
  auto gradients = [&held](int64_t every) {
    TinySetup s;
    s.vit.drop_path_rate = 0.3;
    s.vit.checkpoint_every = every;
    Generator init(3);
    BamModel model(s.vit, s.proj, &init);
    model.to(Device::cuda());
    std::vector<Tensor> batch = fixed_batch(8);
    manual_seed(21);
    const auto before = static_cast<int64_t>(cuda::memory_stats(0).bytes_in_use);
    Tensor z;
    {
      AutocastGuard autocast(DType::bf16);
      z = model.forward(batch);
    }
    held[every > 0 ? 1 : 0] = static_cast<int64_t>(cuda::memory_stats(0).bytes_in_use) - before;
    bam_loss(z, 0.05, loss_options()).loss.backward();
    std::vector<Tensor> grads;
    for (const auto& [name, p] : model.named_parameters()) grads.push_back(p.grad().to(Device::cpu()));
    return grads;
  };
  std::vector<Tensor> plain = gradients(0), checkpointed = gradients(1);
  REQUIRE(plain.size() == checkpointed.size());
  double worst = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    Tensor diff = sub(checkpointed[i], plain[i]);
    const double norm = std::sqrt(sum(mul(plain[i], plain[i])).item());
    if (norm > 0) worst = std::max(worst, std::sqrt(sum(mul(diff, diff)).item()) / norm);
  }
  MESSAGE("checkpointed vs kept activations, bf16: worst relative L2 gradient difference "
          << worst << "; device bytes held between forward and backward " << held[1] << " vs " << held[0]);
  CHECK(worst < 1e-3);
  CHECK(held[1] * 2 < held[0]);
}

TEST_CASE("a short bf16 and fp16 training run tracks the f32 run's loss") {
  // 30 steps on a GPU; 15 on the emulator, where each step of the tiny model takes about 2 s and
  // this test was most of the CPU suite's critical path (the loss has dropped by then).
  const bool emulated = cuda::device_description(0).find("emulator") != std::string::npos;
  const int steps = emulated ? 15 : 30;
  std::vector<double> f32 = train_losses(DType::f32, steps);
  std::vector<double> bf16 = train_losses(DType::bf16, steps);
  int64_t skipped = 0;
  std::vector<double> fp16 = train_losses(DType::f16, steps, &skipped);
  // The scaler starts at 2^16; the first steps may overflow and be skipped while it backs off,
  // which delays the fp16 run by that many steps: compare step i + skipped with step i.
  REQUIRE(skipped <= 3);
  double worst_bf16 = 0, worst_fp16 = 0;
  for (int i = 0; i < steps; ++i) worst_bf16 = std::max(worst_bf16, std::abs(bf16[i] - f32[i]) / f32[i]);
  for (int i = 0; i + skipped < steps; ++i)
    worst_fp16 = std::max(worst_fp16, std::abs(fp16[i + skipped] - f32[i]) / f32[i]);
  MESSAGE("loss: f32 " << f32.front() << " -> " << f32.back() << ", bf16 -> " << bf16.back() << ", fp16 -> "
                       << fp16.back() << " (" << skipped << " skipped steps); worst relative gap bf16 " << worst_bf16
                       << ", fp16 " << worst_fp16);
  CHECK(f32.back() < f32.front() - 0.05);  // the run learns, so tracking it means something
  CHECK(worst_bf16 < 0.02);
  CHECK(worst_fp16 < 0.01);
}

// Every host wait drains the stream and idles the GPU until the host launches again: a training
// step reads its loss, target entropy, embedding spread and (fp16) overflow check in one copy. A
// .item() that creeps back into the step or its logging (log_freq 1 below) fails this test.
// The fp16 run keeps top-k targets (--top_k_sink), whose index ops must not wait either.
TEST_CASE("a bamtrain step waits for the device once, in bf16 and in fp16 (with --top_k_sink)") {
  for (const std::string precision : {"bf16", "fp16"}) {
    CAPTURE(precision);
    TrainConfig c = small_train_config(scratch_dir("gpu_waits_" + precision).string());
    c.epochs = 1;
    c.warmup_epochs = 0;
    c.teacher = true;  // the EMA update must not wait either
    c.device = "cuda";
    c.precision = precision;
    c.log_freq = 1;  // the progress line and steps.jsonl every step: logging must not wait
    if (precision == "fp16") c.top_k_sink = 12;
    std::filesystem::remove_all(c.output_dir);
    Trainer trainer(c, make_train_data(c));
    TrainResult r = trainer.run();
    REQUIRE(r.epochs.size() == 1);
    MESSAGE(precision << ": " << r.epochs[0].host_waits_per_step << " host waits per step");
    CHECK(r.epochs[0].host_waits_per_step == 1.0);
    CHECK(std::isfinite(r.epochs[0].target_entropy));
    CHECK(r.epochs[0].embedding_std > 0);
    std::filesystem::remove_all(c.output_dir);
  }
}

// A gradient that overflows fp16 at every loss scale (a temperature of 1e-38 multiplies it by
// 1e38) was skipped step after step in silence, the scale halving towards 0. Once the scale is
// below fp16's smallest value the run stops, saying why, with nothing of those steps applied.
TEST_CASE("fp16: gradients that overflow at every loss scale stop the run") {
  TrainConfig c = small_train_config(scratch_dir("gpu_fp16_exhausted").string());
  c.data_path = "synthetic:16";  // one step per epoch
  c.epochs = 60;
  c.warmup_epochs = 0;
  c.temperature = 1e-38;
  c.drop_path_rate = 0;
  c.device = "cuda";
  c.precision = "fp16";
  std::filesystem::remove_all(c.output_dir);
  const std::string message = error_of([&] { Trainer(c, make_train_data(c)).run(); });
  CHECK_MESSAGE(message.find("fp16: the gradients stayed non-finite at every loss scale down to") != std::string::npos,
                message);
  CHECK_MESSAGE(message.find("41 steps skipped so far") != std::string::npos, message);
  std::filesystem::remove_all(c.output_dir);
}

}  // namespace bam::test
