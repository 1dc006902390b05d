// `bamtool demo`: the smallest end-to-end use of the engine. Trains an MLP to separate three
// interleaved spirals with plain SGD + momentum written out by hand, printing the loss as it falls.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tools/bamtool/commands.h"

namespace bam::tool {
namespace {

struct DemoOptions {
  int steps = 400;
  int points_per_class = 300;
  int hidden = 64;
  double lr = 0.1;
  uint64_t seed = 0;
};

// Three spiral arms in the plane with a little noise; label = arm.
void make_spirals(int per_class, Generator& gen, Tensor* points, Tensor* labels) {
  const int classes = 3, n = per_class * classes;
  Tensor noise = mul(randn({n, 2}, {DType::f32}, &gen), 0.15);
  std::vector<float> xy(2 * n);
  std::vector<int64_t> y(n);
  for (int c = 0; c < classes; ++c)
    for (int i = 0; i < per_class; ++i) {
      double r = static_cast<double>(i) / per_class;
      double angle = 4.0 * r + 2.0 * M_PI * c / classes;
      int k = c * per_class + i;
      xy[2 * k] = static_cast<float>(r * std::cos(angle) * 3);
      xy[2 * k + 1] = static_cast<float>(r * std::sin(angle) * 3);
      y[k] = c;
    }
  *points = add(from_vector(xy, {n, 2}), noise);
  *labels = from_vector(y, {n});
}

int run_demo(const DemoOptions& o) {
  Generator gen(o.seed);
  Tensor x, y;
  make_spirals(o.points_per_class, gen, &x, &y);
  auto init = [&](int64_t out, int64_t in) {
    Tensor w = mul(randn({out, in}, {}, &gen), std::sqrt(2.0 / in));
    return w.requires_grad_(true);
  };
  std::vector<Tensor> params = {init(o.hidden, 2), zeros({o.hidden}).requires_grad_(true),
                                init(o.hidden, o.hidden), zeros({o.hidden}).requires_grad_(true),
                                init(3, o.hidden), zeros({3}).requires_grad_(true)};
  std::vector<Tensor> velocity;
  for (auto& p : params) velocity.push_back(zeros_like(p));

  std::printf("bam demo: MLP 2-%d-%d-3 on %lld spiral points, SGD lr %.3g momentum 0.9\n", o.hidden, o.hidden,
              static_cast<long long>(x.size(0)), o.lr);
  auto start = std::chrono::steady_clock::now();
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step <= o.steps; ++step) {
    Tensor h = gelu(linear(x, params[0], params[1]));
    h = gelu(linear(h, params[2], params[3]));
    Tensor logits = linear(h, params[4], params[5]);
    Tensor loss = cross_entropy(logits, y);
    last_loss = loss.item();
    if (step == 0) first_loss = last_loss;
    if (step % (o.steps / 10) == 0) {
      double accuracy;
      {
        NoGradGuard no_grad;
        accuracy = mean(eq(argmax(logits, 1), y).to(DType::f32)).item();
      }
      std::printf("step %4d  loss %.4f  accuracy %5.1f%%\n", step, last_loss, 100 * accuracy);
    }
    if (step == o.steps) break;
    for (auto& p : params) p.set_grad(Tensor());
    loss.backward();
    NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      velocity[i].mul_(0.9).add_(params[i].grad());
      params[i].add_(velocity[i], -o.lr);
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("loss %.4f -> %.4f in %.1f s\n", first_loss, last_loss, seconds);
  return last_loss < first_loss ? 0 : 1;
}

}  // namespace

Action add_demo(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* sub = app.add_subcommand("demo", "Train a small MLP on synthetic spirals and print the loss falling");
  sub->add_option("--steps", options->steps, "SGD steps")->check(CLI::Range(10, 1000000));
  sub->add_option("--points", options->points_per_class, "points per class")->check(CLI::Range(10, 1000000));
  sub->add_option("--hidden", options->hidden, "hidden width")->check(CLI::Range(1, 65536));
  sub->add_option("--lr", options->lr, "learning rate")->check(positive_number);
  sub->add_option("--seed", options->seed, "random seed");
  return [options] { return run_demo(*options); };
}

}  // namespace bam::tool
