// Optimizers against closed-form single steps, parameter groups, gradient clipping, schedules.
#include <cmath>
#include <limits>
#include <map>

#include "bam/schedules.h"
#include "engine/autocast.h"
#include "engine/grad_scaler.h"
#include "engine/optim.h"
#include "tests/support.h"

namespace bam::test {
namespace {

// One parameter [2] with a given gradient, in the decayed group.
struct OneParam {
  Tensor p;
  std::vector<ParamGroup> groups;
  OneParam(std::vector<float> value, std::vector<float> grad, Shape shape = {2}) {
    p = from_vector(value, shape).requires_grad_(true);
    p.set_grad(from_vector(grad, shape));
    groups = {ParamGroup{{{"w", p}}, true}};
  }
};

}  // namespace

TEST_CASE("AdamW: two steps against the closed form") {
  OneParam w({1.0f, -2.0f}, {0.5f, 0.25f});
  AdamW opt(w.groups, 0.9, 0.999, 1e-8);
  opt.set_lr(0.1);
  opt.set_weight_decay(0.01);
  opt.step();
  // Step 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2: p = p (1 - lr wd) - lr * g / (|g| + eps)
  auto p1 = w.p.to_vector<float>();
  CHECK(p1[0] == doctest::Approx(1.0 * (1 - 0.001) - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-6));
  CHECK(p1[1] == doctest::Approx(-2.0 * (1 - 0.001) - 0.1 * 0.25 / (0.25 + 1e-8)).epsilon(1e-6));
  // Step 2 with gradient g2: m = 0.9*0.1 g + 0.1 g2, v = 0.999*0.001 g^2 + 0.001 g2^2, bias corrections 1-0.9^2, 1-0.999^2.
  w.p.set_grad(from_vector(std::vector<float>{-1.0f, 0.25f}, {2}));
  opt.step();
  auto p2 = w.p.to_vector<float>();
  double g = 0.5, g2 = -1.0;
  double m = 0.9 * 0.1 * g + 0.1 * g2, v = 0.999 * 0.001 * g * g + 0.001 * g2 * g2;
  double expected = p1[0] * (1 - 0.001) - 0.1 / (1 - 0.81) * m / (std::sqrt(v) / std::sqrt(1 - 0.999 * 0.999) + 1e-8);
  CHECK(p2[0] == doctest::Approx(expected).epsilon(1e-5));
  CHECK(opt.steps() == 2);
  CHECK(opt.state().size() == 3);  // exp_avg, exp_avg_sq and step of one parameter
}

TEST_CASE("AdamW counts each parameter's steps for its bias corrections, as torch's state['step']") {
  // A (decayed) has a gradient from step 1, B (the last layer a --freeze_last_layer run unfreezes)
  // from step 3: B's first update is the closed form of a first step, not step 3's corrections
  // applied to fresh moments (0.64 times as far here; 2.7 times after 1,250 frozen steps).
  Tensor a = from_vector(std::vector<float>{1.0f, -1.0f}, {2}).requires_grad_(true);
  Tensor b = from_vector(std::vector<float>{0.5f, 2.0f}, {2}).requires_grad_(true);
  auto make = [&] { return std::make_unique<AdamW>(std::vector<ParamGroup>{{{{"a", a}, {"b", b}}, true}}); };
  auto opt = make();
  opt->set_lr(0.1);
  opt->set_weight_decay(0.05);
  for (int step = 1; step <= 2; ++step) {
    a.set_grad(from_vector(std::vector<float>{0.3f, -0.2f}, {2}));
    opt->step();
  }
  const std::vector<float> b0 = b.to_vector<float>();
  a.set_grad(from_vector(std::vector<float>{0.3f, -0.2f}, {2}));
  b.set_grad(from_vector(std::vector<float>{0.4f, -0.1f}, {2}));
  opt->step();
  const std::vector<float> b1 = b.to_vector<float>();
  CHECK(b1[0] == doctest::Approx(b0[0] * (1 - 0.1 * 0.05) - 0.1 * 0.4 / (0.4 + 1e-8)).epsilon(1e-6));
  CHECK(b1[1] == doctest::Approx(b0[1] * (1 - 0.1 * 0.05) + 0.1 * 0.1 / (0.1 + 1e-8)).epsilon(1e-6));
  CHECK(opt->steps() == 3);

  // The counts are state: a resumed optimizer goes on as the one that kept running.
  NamedTensors state = opt->state();
  for (auto& [name, t] : state) t = t.clone();  // the moments themselves, which the next step updates
  std::map<std::string, int64_t> counts;
  for (const auto& [name, t] : state)
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".step") == 0) counts[name] = t.to_vector<int64_t>()[0];
  CHECK(counts == std::map<std::string, int64_t>{{"a.step", 3}, {"b.step", 1}});
  const Tensor a_saved = a.clone(), b_saved = b.clone();
  auto next_step = [&](Optimizer& o) {
    a.set_grad(from_vector(std::vector<float>{-0.1f, 0.2f}, {2}));
    b.set_grad(from_vector(std::vector<float>{0.2f, 0.3f}, {2}));
    o.step();
    return std::make_pair(a.to_vector<float>(), b.to_vector<float>());
  };
  const auto kept = next_step(*opt);
  auto resumed = make();
  resumed->set_lr(0.1);
  resumed->set_weight_decay(0.05);
  resumed->load_state(state, 3);
  {
    NoGradGuard no_grad;
    a.copy_(a_saved);
    b.copy_(b_saved);
  }
  CHECK(next_step(*resumed) == kept);

  // A checkpoint written before the counts: every parameter with moments takes the optimizer's.
  NamedTensors old_style;
  for (const auto& [name, t] : state)
    if (name.find(".step") == std::string::npos) old_style.emplace_back(name, t);
  auto old = make();
  old->load_state(old_style, 3);
  counts.clear();
  for (const auto& [name, t] : old->state())
    if (name.find(".step") != std::string::npos) counts[name] = t.to_vector<int64_t>()[0];
  CHECK(counts == std::map<std::string, int64_t>{{"a.step", 3}, {"b.step", 3}});
  // A count the optimizer cannot have reached is refused.
  NamedTensors wrong = state;
  for (auto& [name, t] : wrong)
    if (name == "b.step") t = from_vector(std::vector<int64_t>{7}, {1});
  CHECK_THROWS_WITH_AS(make()->load_state(wrong, 3), doctest::Contains("'b.step' is 7, outside 0 .. the optimizer's 3"),
                       Error);

  // A step that fails on a parameter counts for none.
  a.set_grad(from_vector(std::vector<float>{0.1f, 0.1f}, {2}));
  b.set_grad(from_vector(std::vector<double>{0.1, 0.1}, {2}));
  CHECK_THROWS_AS(opt->step(), Error);
  CHECK(opt->steps() == 4);
}

TEST_CASE("SGD with momentum and weight decay") {
  OneParam w({1.0f, 2.0f}, {0.5f, -0.5f});
  SGD opt(w.groups, 0.9);
  opt.set_lr(0.1);
  opt.set_weight_decay(0.1);
  opt.step();  // d = g + 0.1 p = [0.6, -0.3]; buf = d; p -= 0.1 d
  auto p1 = w.p.to_vector<float>();
  CHECK(p1[0] == doctest::Approx(0.94f));
  CHECK(p1[1] == doctest::Approx(2.03f));
  opt.step();  // d = g + 0.1 p1; buf = 0.9 buf + d
  double d0 = 0.5 + 0.1 * 0.94, buf0 = 0.9 * 0.6 + d0;
  CHECK(w.p.to_vector<float>()[0] == doctest::Approx(0.94 - 0.1 * buf0).epsilon(1e-6));
}

TEST_CASE("LARS: trust ratio for matrices, plain momentum for vectors") {
  // A 2x1 matrix: p = [3, 4] (norm 5), g = [0, 1], wd 0: d = g, ||d|| = 1, ratio = eta * 5 / 1.
  OneParam w({3.0f, 4.0f}, {0.0f, 1.0f}, {2, 1});
  LARS opt(w.groups, 0.9, 0.001);
  opt.set_lr(1.0);
  opt.set_weight_decay(0.0);
  opt.step();
  auto p = w.p.to_vector<float>();
  CHECK(p[0] == doctest::Approx(3.0f));
  CHECK(p[1] == doctest::Approx(4.0f - 0.005f));
  // A vector ignores weight decay and the trust ratio.
  OneParam b({3.0f, 4.0f}, {0.0f, 1.0f});
  LARS opt2(b.groups, 0.9, 0.001);
  opt2.set_lr(1.0);
  opt2.set_weight_decay(0.5);
  opt2.step();
  CHECK(b.p.to_vector<float>()[1] == doctest::Approx(3.0f));
}

TEST_CASE("EMA teacher update: every pair in one call; mismatched lists and shapes are errors") {
  std::vector<Tensor> ema = {from_vector(std::vector<float>{1, 2}, {2}), from_vector(std::vector<float>{10}, {1, 1})};
  std::vector<Tensor> x = {from_vector(std::vector<float>{3, 6}, {2}), from_vector(std::vector<float>{20}, {1, 1})};
  ema_update(ema, x, 0.75);  // 0.75 * ema + 0.25 * x
  CHECK(ema[0].to_vector<float>() == std::vector<float>{1.5f, 3.0f});
  CHECK(ema[1].to_vector<float>() == std::vector<float>{12.5f});
  CHECK_THROWS_WITH(ema_update(ema, {x[0]}, 0.9), doctest::Contains("2 EMA tensors for 1 sources"));
  CHECK_THROWS_WITH(ema_update({ema[0]}, {x[1]}, 0.9), doctest::Contains("shapes differ"));
}

TEST_CASE("parameter groups leave biases and 1-d tensors undecayed") {
  NamedTensors params = {{"blocks.0.attn.qkv.weight", zeros({4, 2}).requires_grad_(true)},
                         {"blocks.0.attn.qkv.bias", zeros({4}).requires_grad_(true)},
                         {"norm.weight", zeros({2}).requires_grad_(true)},
                         {"pos_embed", zeros({1, 3, 2}).requires_grad_(true)},
                         {"frozen", zeros({2, 2})}};
  auto groups = make_param_groups(params);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].decay);
  CHECK(groups[0].params.size() == 2);
  CHECK(groups[1].params.size() == 2);
  CHECK_FALSE(groups[1].decay);
  // The undecayed group really gets no decay.
  Tensor bias = groups[1].params[0].second;
  bias.set_grad(zeros({4}));
  {
    NoGradGuard no_grad;
    bias.fill_(1.0);
  }
  SGD opt(groups, 0.0);
  opt.set_lr(1.0);
  opt.set_weight_decay(0.5);
  opt.step();
  CHECK(bias.to_vector<float>()[0] == 1.0f);
  CHECK_THROWS_WITH_AS(make_optimizer("adam", groups), doctest::Contains("--optimizer"), Error);
}

TEST_CASE("gradient clipping") {
  Tensor a = zeros({2}).requires_grad_(true), b = zeros({1}).requires_grad_(true);
  a.set_grad(from_vector(std::vector<float>{3, 0}, {2}));
  b.set_grad(from_vector(std::vector<float>{4}, {1}));
  double norm = clip_grad_norm({a, b}, 1.0).item();
  CHECK(norm == doctest::Approx(5.0));
  CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(3.0 / (5.0 + 1e-6)));
  CHECK(b.grad().to_vector<float>()[0] == doctest::Approx(4.0 / (5.0 + 1e-6)));
  CHECK(clip_grad_norm({a, b}, 10.0).item() == doctest::Approx(1.0).epsilon(1e-5));  // below the limit: unchanged
  b.set_grad(from_vector(std::vector<float>{4}, {1}));
  a.set_grad(from_vector(std::vector<float>{0.3f, 0.4f}, {2}));
  clip_grad_per_param({a, b}, 1.0);
  CHECK(a.grad().to_vector<float>()[0] == doctest::Approx(0.3f));  // norm 0.5 stays
  CHECK(b.grad().to_vector<float>()[0] == doctest::Approx(1.0f).epsilon(1e-5));
}

TEST_CASE("schedules") {
  auto lr = cosine_schedule(1.0, 0.0, 4, 10, 1);
  REQUIRE(lr.size() == 40);
  CHECK(lr[0] == 0.0);                    // warm-up starts at 0
  CHECK(lr[9] == 1.0);                    // and reaches the base value at its last step (np.linspace)
  CHECK(lr[10] == 1.0);                   // the cosine starts at the base value
  CHECK(lr[25] == doctest::Approx(0.5));  // halfway through the cosine part
  CHECK(lr[39] == doctest::Approx(0.5 * (1 + std::cos(M_PI * 29.0 / 30.0))));
  auto wd = cosine_schedule(0.04, 0.4, 2, 3);
  CHECK(wd.front() == doctest::Approx(0.04));
  CHECK(wd.back() < 0.4);
  CHECK(wd.back() > 0.35);
  CHECK(reg_for_epoch(0.05, 0.1, 30, 0) == 0.05);
  CHECK(reg_for_epoch(0.05, 0.1, 30, 29) == doctest::Approx(0.1));
  CHECK(reg_for_epoch(0.05, 0.1, 30, 100) == 0.1);
  CHECK(reg_for_epoch(0.05, 0.1, 3, 1) == doctest::Approx(0.075));
}

TEST_CASE("GradScaler: unscales, skips on inf/NaN with backoff, grows after clean steps") {
  GradScalerOptions options;
  options.init_scale = 1024;
  options.growth_interval = 3;
  GradScaler scaler(true, options);
  Tensor loss = from_vector(std::vector<float>{0.5f}, {});
  CHECK(scaler.scale_loss(loss).item() == doctest::Approx(512.0));

  OneParam w({1.0f, 2.0f}, {2048.0f, -512.0f});
  REQUIRE(scaler.unscale({w.p}));
  std::vector<float> g = w.p.grad().to_vector<float>();
  CHECK(g[0] == 2.0f);
  CHECK(g[1] == -0.5f);

  // An overflowed gradient: the step is reported non-finite, the scale halves, the counter resets.
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    OneParam v({1.0f, 2.0f}, {1.0f, bad});
    double before = scaler.scale();
    CHECK_FALSE(scaler.unscale({v.p}));
    scaler.update(false);
    CHECK(scaler.scale() == before * 0.5);
  }
  CHECK(scaler.skipped_steps() == 2);
  // Three clean steps in a row double it.
  double before = scaler.scale();
  for (int i = 0; i < 3; ++i) {
    CHECK(scaler.scale() == before);
    scaler.update(true);
  }
  CHECK(scaler.scale() == before * 2);
  // Growth stops short of infinity, as torch's (an infinite scale would skip every step after).
  GradScalerOptions huge = options;
  huge.init_scale = std::numeric_limits<double>::max() / 1.5;
  huge.growth_interval = 1;
  GradScaler top(true, huge);
  top.update(true);
  CHECK(top.scale() == huge.init_scale);
  // Backed off below 2^-24, fp16's smallest value (from 2^16: 41 skips in a row), it is exhausted:
  // a gradient that overflows there does at any scale, and the trainer stops.
  GradScaler shrinking(true);
  int skips = 0;
  while (!shrinking.exhausted() && skips < 100) {
    shrinking.update(false);
    ++skips;
  }
  CHECK(skips == 41);
  CHECK_FALSE(GradScaler(false).exhausted());

  // Disabled (f32/bf16): the loss is untouched and gradients are left alone.
  GradScaler off(false);
  CHECK(off.scale_loss(loss).item() == doctest::Approx(0.5));
  OneParam u({1.0f, 2.0f}, {3.0f, std::numeric_limits<float>::infinity()});
  CHECK(off.unscale({u.p}));
  CHECK(u.p.grad().to_vector<float>()[0] == 3.0f);

  // unscale_queued (the trainer reads it with the loss): the unscaled gradients' sum of squares,
  // not finite after an overflow, undefined when disabled.
  GradScaler queued(true, options);
  OneParam q({1.0f, 2.0f}, {3072.0f, -4096.0f});
  Tensor sum_of_squares = queued.unscale_queued({q.p});
  CHECK(sum_of_squares.dtype() == DType::f64);
  CHECK(sum_of_squares.item() == 25.0);  // (3072 / 1024)^2 + (4096 / 1024)^2
  CHECK(q.p.grad().to_vector<float>()[1] == -4.0f);
  OneParam bad({1.0f}, {std::numeric_limits<float>::infinity()}, {1});
  CHECK_FALSE(std::isfinite(queued.unscale_queued({bad.p}).item()));
  CHECK_FALSE(off.unscale_queued({u.p}).defined());  // disabled: nothing to check, nothing to read
}

TEST_CASE("autocast: the guard nests and restores; CPU tensors are never cast") {
  CHECK(autocast_dtype() == DType::f32);
  Tensor x = from_vector(std::vector<float>{1.0f, 2.0f}, {2});
  {
    AutocastGuard outer(DType::bf16);
    CHECK(autocast_dtype() == DType::bf16);
    {
      AutocastGuard inner(DType::f32);
      CHECK(autocast_dtype() == DType::f32);
    }
    CHECK(autocast_dtype() == DType::bf16);
    // The CPU kernels have no 16-bit paths: autocast leaves CPU tensors in f32.
    CHECK(autocast_compute(x).dtype() == DType::f32);
  }
  CHECK(autocast_dtype() == DType::f32);
  CHECK_THROWS_WITH_AS(AutocastGuard(DType::i32), doctest::Contains("bf16, f16 or f32"), Error);
  CHECK(precision_dtype("fp16") == DType::f16);
  CHECK_THROWS_WITH_AS(precision_dtype("tf32"), doctest::Contains("--precision"), Error);
}

}  // namespace bam::test
