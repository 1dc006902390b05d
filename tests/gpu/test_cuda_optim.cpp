// The optimizers' CUDA paths against their CPU twins: multi-tensor AdamW, SGD, LARS and the EMA
// teacher update with fp32 master weights, global and per-parameter gradient clipping, and
// GradScaler's unscale (which must find inf and NaN). The parameter lists cross the kernels' list
// (64 tensors) and chunk-table splits, so every launch path runs.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "engine/cuda.h"
#include "engine/grad_scaler.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "kernels/cuda/optimizer.h"
#include "tests/support.h"

namespace bam::test {

TEST_CASE("CUDA multi-tensor AdamW and gradient clipping match the CPU, across list and chunk-table splits") {
  InputMaker maker(test_seed("cuda multi-tensor adamw"));
  // 70 tensors (more than one list of 64) and one of 17M elements (more than one chunk table).
  std::vector<int64_t> sizes;
  for (int i = 0; i < 69; ++i) sizes.push_back(1 + (i * 7919) % 70000);
  sizes.push_back(int64_t(17) << 20);
  std::vector<ParamGroup> cpu_groups(2), gpu_groups(2);
  std::vector<Tensor> cpu_params, gpu_params;
  Generator gen(11);
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = randn({sizes[i]}, {}, &gen), g = randn({sizes[i]}, {}, &gen);
    Tensor cp = p.clone().requires_grad_(true), gp = p.to(Device::cuda()).requires_grad_(true);
    cp.set_grad(g.clone());
    gp.set_grad(g.to(Device::cuda()));
    std::string name = "p" + std::to_string(i);
    cpu_groups[i % 2].params.emplace_back(name, cp);
    gpu_groups[i % 2].params.emplace_back(name, gp);
    cpu_params.push_back(cp);
    gpu_params.push_back(gp);
  }
  cpu_groups[1].decay = gpu_groups[1].decay = false;
  AdamW cpu_opt(cpu_groups), gpu_opt(gpu_groups);
  for (AdamW* opt : {&cpu_opt, &gpu_opt}) {
    opt->set_lr(1e-3);
    opt->set_weight_decay(0.05);
  }
  // Every third tensor has no gradient in the first step: its bias corrections count its own
  // steps, one fewer than its neighbours' in the same list.
  std::vector<std::pair<Tensor, Tensor>> held;
  for (size_t i = 0; i < sizes.size(); i += 3) {
    held.emplace_back(cpu_params[i].grad(), gpu_params[i].grad());
    cpu_params[i].set_grad(Tensor());
    gpu_params[i].set_grad(Tensor());
  }
  for (int step = 0; step < 2; ++step) {
    if (step == 1)
      for (size_t i = 0; i < sizes.size(); i += 3) {
        cpu_params[i].set_grad(held[i / 3].first);
        gpu_params[i].set_grad(held[i / 3].second);
      }
    double cpu_norm = clip_grad_norm(cpu_params, 100.0).item();
    double gpu_norm = clip_grad_norm(gpu_params, 100.0).item();
    CHECK(gpu_norm == doctest::Approx(cpu_norm).epsilon(1e-9));  // both sum squares in double
    cpu_opt.step();
    gpu_opt.step();
  }
  Tolerance tol = tolerance_for(DType::f32);
  for (size_t i = 0; i < sizes.size(); ++i) {
    CAPTURE(i);
    check_close(gpu_params[i], to_ref(cpu_params[i]), tol, "AdamW parameter " + std::to_string(i));
    check_close(gpu_params[i].grad(), to_ref(cpu_params[i].grad()), tol, "clipped gradient " + std::to_string(i));
  }
}

TEST_CASE("CUDA multi-tensor SGD, LARS and EMA teacher updates match the CPU, across list and chunk-table splits") {
  // As the AdamW case: 70 tensors (more than one list of 64) and one of 17M elements (more than one
  // chunk table). Every third tensor is a vector, the rest matrices, so LARS adapts some of them
  // and not others, in the same lists.
  std::vector<Shape> shapes;
  for (int i = 0; i < 69; ++i) {
    const int64_t n = 1 + (i * 7919) % 70000;
    shapes.push_back(i % 3 == 0 ? Shape{n} : Shape{1 + i % 5, n});
  }
  shapes.push_back({17, int64_t(1) << 20});
  for (const char* name : {"sgd", "lars"}) {
    CAPTURE(name);
    Generator gen(12);
    std::vector<ParamGroup> cpu_groups(2), gpu_groups(2);
    std::vector<Tensor> cpu_params, gpu_params;
    for (size_t i = 0; i < shapes.size(); ++i) {
      // Matrix 1 starts at zero: LARS's trust ratio is then 1 (||p|| = 0) on its first step.
      Tensor p = i == 1 ? zeros(shapes[i]) : randn(shapes[i], {}, &gen);
      Tensor cp = p.clone().requires_grad_(true), gp = p.to(Device::cuda()).requires_grad_(true);
      cpu_groups[i % 2].params.emplace_back("p" + std::to_string(i), cp);
      gpu_groups[i % 2].params.emplace_back("p" + std::to_string(i), gp);
      cpu_params.push_back(cp);
      gpu_params.push_back(gp);
    }
    cpu_groups[1].decay = gpu_groups[1].decay = false;
    auto cpu_opt = make_optimizer(name, cpu_groups), gpu_opt = make_optimizer(name, gpu_groups);
    for (Optimizer* opt : {cpu_opt.get(), gpu_opt.get()}) {
      opt->set_lr(0.1);
      opt->set_weight_decay(0.05);
    }
    // Three steps with fresh gradients: SGD's first step seeds its buffer, the later ones use it.
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < shapes.size(); ++i) {
        Tensor g = randn(shapes[i], {}, &gen);
        cpu_params[i].set_grad(g.clone());
        gpu_params[i].set_grad(g.to(Device::cuda()));
      }
      cpu_opt->step();
      gpu_opt->step();
    }
    NamedTensors cpu_state = cpu_opt->state(), gpu_state = gpu_opt->state();
    REQUIRE(gpu_state.size() == cpu_state.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      CAPTURE(i);
      check_close(gpu_params[i], to_ref(cpu_params[i]), tolerance_for(DType::f32), "parameter " + std::to_string(i));
      CHECK(gpu_state[i].first == cpu_state[i].first);
      check_close(gpu_state[i].second, to_ref(cpu_state[i].second), tolerance_for(DType::f32),
                  "momentum buffer " + gpu_state[i].first);
    }
  }
  // The EMA teacher: one multi-tensor update of every pair.
  Generator gen(13);
  std::vector<Tensor> cpu_ema, gpu_ema, cpu_x, gpu_x;
  for (const Shape& shape : shapes) {
    Tensor e = randn(shape, {}, &gen), x = randn(shape, {}, &gen);
    cpu_ema.push_back(e.clone());
    gpu_ema.push_back(e.to(Device::cuda()));
    cpu_x.push_back(x);
    gpu_x.push_back(x.to(Device::cuda()));
  }
  ema_update(cpu_ema, cpu_x, 0.996);
  ema_update(gpu_ema, gpu_x, 0.996);
  for (size_t i = 0; i < shapes.size(); ++i)
    check_close(gpu_ema[i], to_ref(cpu_ema[i]), tolerance_for(DType::f32), "EMA tensor " + std::to_string(i));
}

TEST_CASE("CUDA per-parameter clipping and GradScaler's unscale match the CPU; unscale finds inf and NaN") {
  // Gradient norms of about 1, 10, 70 and 265: a max norm of 20 clips the last two only.
  Generator gen(15);
  std::vector<Tensor> cpu_params, gpu_params;
  for (int64_t n : {1, 100, 5000, 70001}) {
    Tensor p = randn({n}, {}, &gen), g = randn({n}, {}, &gen);
    Tensor cp = p.clone().requires_grad_(true), gp = p.to(Device::cuda()).requires_grad_(true);
    cp.set_grad(g.clone());
    gp.set_grad(g.to(Device::cuda()));
    cpu_params.push_back(cp);
    gpu_params.push_back(gp);
  }
  auto compare_grads = [&](const std::string& what) {
    for (size_t i = 0; i < cpu_params.size(); ++i)
      check_close(gpu_params[i].grad(), to_ref(cpu_params[i].grad()), tolerance_for(DType::f32),
                  what + " gradient " + std::to_string(i));
  };
  clip_grad_per_param(cpu_params, 20.0);
  clip_grad_per_param(gpu_params, 20.0);
  compare_grads("per-parameter clipping:");
  GradScaler cpu_scaler(true), gpu_scaler(true);
  CHECK(cpu_scaler.unscale(cpu_params));
  CHECK(gpu_scaler.unscale(gpu_params));
  // Dividing by 65536 is exact: the clipped gradients' differences carry over, relative only.
  for (size_t i = 0; i < cpu_params.size(); ++i)
    check_close(gpu_params[i].grad(), to_ref(cpu_params[i].grad()), {0.0, 1e-5},
                "unscaled gradient " + std::to_string(i));
  // One inf, then one NaN, in the largest gradient: the step must be reported as not finite.
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    std::vector<float> g = cpu_params[3].grad().to_vector<float>();
    g[12345] = static_cast<float>(bad);
    cpu_params[3].set_grad(from_vector(g, {70001}));
    gpu_params[3].set_grad(from_vector(g, {70001}).to(Device::cuda()));
    CHECK_FALSE(cpu_scaler.unscale(cpu_params));
    CHECK_FALSE(gpu_scaler.unscale(gpu_params));
  }
}

// The norm reductions share one device scratch, kept apart only by the order of one stream: a
// launch on another stream is refused before it is queued. (The stream below is a value no launch
// ever sees: the check refuses it first.)
TEST_CASE("the optimizer's norm reductions refuse a second stream") {
  Tensor x = ones({1000}, {DType::f32, Device::cuda()}), sum = zeros({1}, {DType::f64, Device::cuda()});
  cuda_kernels::accumulate_sum_of_squares(x.data<float>(), x.numel(), sum.data<double>(), cuda::current_stream());
  CHECK(sum.item() == 1000.0);
  void* other = reinterpret_cast<void*>(uintptr_t{0x10});
  CHECK_THROWS_WITH_AS(cuda_kernels::accumulate_sum_of_squares(x.data<float>(), x.numel(), sum.data<double>(), other),
                       doctest::Contains("queued on another stream than the engine's"), Error);
}

}  // namespace bam::test
