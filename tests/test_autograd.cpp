// Autograd semantics: scalar and given gradients, accumulation across calls, reuse of a tensor,
// NoGradGuard, detach, graph release and retain_graph, retain_grad, misuse errors, deep graphs.
#include "engine/optim.h"
#include "tests/support.h"

namespace bam::test {

namespace {
Tensor param(std::vector<double> v, Shape shape) {
  Tensor t = from_vector(v, shape, {DType::f64});
  t.requires_grad_(true);
  return t;
}
std::vector<double> grad_of(const Tensor& t) { return t.grad().to_vector<double>(); }
}  // namespace

TEST_CASE("backward from a scalar and with a given gradient") {
  Tensor x = param({1, 2, 3}, {3});
  Tensor y = sum(mul(x, x));  // dy/dx = 2x
  y.backward();
  CHECK(grad_of(x) == std::vector<double>{2, 4, 6});

  Tensor z = param({1, 2}, {2});
  Tensor out = mul(z, 3.0);
  out.backward(from_vector(std::vector<double>{1, -1}, {2}, {DType::f64}));
  CHECK(grad_of(z) == std::vector<double>{3, -3});
}

TEST_CASE("gradients accumulate across backward calls until reset") {
  Tensor x = param({1, 1}, {2});
  sum(mul(x, 2.0)).backward();
  sum(mul(x, 5.0)).backward();
  CHECK(grad_of(x) == std::vector<double>{7, 7});
  x.set_grad(Tensor());
  sum(x).backward();
  CHECK(grad_of(x) == std::vector<double>{1, 1});
}

TEST_CASE("a tensor used twice gets both contributions") {
  Tensor x = param({2, 3}, {2});
  Tensor y = add(mul(x, x), exp(x));  // d/dx = 2x + e^x
  Tensor a = mul(y, 2.0), b = mul(y, -1.0);
  sum(add(a, b)).backward();  // = sum(y)
  auto g = grad_of(x);
  CHECK(g[0] == doctest::Approx(4 + std::exp(2.0)));
  CHECK(g[1] == doctest::Approx(6 + std::exp(3.0)));
}

TEST_CASE("shared gradients are not aliased between leaves") {
  // add's backward hands the same gradient tensor to both inputs; scaling one leaf's grad in
  // place (as gradient clipping does) must not scale the other's.
  Tensor a = param({1, 1}, {2}), b = param({1, 1}, {2});
  sum(add(a, b)).backward();
  {
    NoGradGuard no_grad;
    a.grad().mul_(10.0);
  }
  CHECK(grad_of(b) == std::vector<double>{1, 1});
}

TEST_CASE("NoGradGuard and detach stop recording") {
  Tensor x = param({1, 2}, {2});
  {
    NoGradGuard no_grad;
    Tensor y = mul(x, 2.0);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(grad_mode_enabled());
  }
  CHECK(grad_mode_enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == x.storage());
  Tensor y = add(mul(d, 3.0), x);  // only the second term carries gradient
  sum(y).backward();
  CHECK(grad_of(x) == std::vector<double>{1, 1});
}

TEST_CASE("the graph is freed after backward unless retained") {
  Tensor x = param({1, 2}, {2});
  Tensor y = sum(exp(x));
  y.backward(Tensor(), true);  // retain_graph
  y.backward();
  auto g = grad_of(x);
  CHECK(g[0] == doctest::Approx(2 * std::exp(1.0)));
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("already freed"), Error);
  // Saved tensors are released: the leaf's only owner besides us is the graph, now gone.
  Tensor big = param(std::vector<double>(1000, 1.0), {1000});
  Tensor loss = sum(exp(big));
  size_t before = cpu_bytes_in_use();
  loss.backward();
  CHECK(loss.grad_fn()->inputs.empty());
  CHECK(cpu_bytes_in_use() < before + 8000);  // the grad was added; the saved exp(x) is gone
}

TEST_CASE("retain_grad keeps a non-leaf gradient") {
  Tensor x = param({1, 2}, {2});
  Tensor h = mul(x, 3.0);
  h.retain_grad();
  sum(mul(h, h)).backward();
  CHECK(h.grad().to_vector<double>() == std::vector<double>{6, 12});
  CHECK(grad_of(x) == std::vector<double>{18, 36});
}

TEST_CASE("misuse is a clear error") {
  Tensor plain = from_vector(std::vector<double>{1, 2}, {2}, {DType::f64});
  CHECK_THROWS_WITH_AS(sum(plain).backward(), doctest::Contains("does not require grad"), Error);
  Tensor x = param({1, 2}, {2});
  CHECK_THROWS_WITH_AS(mul(x, 2.0).backward(), doctest::Contains("must be given for a non-scalar"), Error);
  CHECK_THROWS_WITH_AS(mul(x, 2.0).backward(zeros({3}, {DType::f64})), doctest::Contains("gradient of shape [3]"),
                       Error);
  CHECK_THROWS_WITH_AS(mul(x, 2.0).requires_grad_(false), doctest::Contains("only leaves"), Error);
}

TEST_CASE("a deep graph backpropagates without recursion limits") {
  Tensor x = param({1.0}, {1});
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = add(y, 0.0);
  sum(mul(y, 2.0)).backward();
  CHECK(grad_of(x) == std::vector<double>{2});
}

TEST_CASE("views propagate gradients to their base") {
  Tensor x = param({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor y = add(mul(x.t().select(0, 1), 10.0), sum(x.slice(1, 0, 3, 2)));
  sum(y).backward();
  // column 1 gets 10 each; columns 0 and 2 get 2 each (the broadcast sum feeds both outputs).
  CHECK(grad_of(x) == std::vector<double>{2, 10, 2, 2, 10, 2});
}

}  // namespace bam::test

namespace bam::test {

TEST_CASE("a tensor changed in place between forward and backward is an error, as torch's version counter") {
  // mul keeps x for w's gradient: x.fill_ after the forward would make that gradient 5, not 2.
  Tensor w = ones({3}).requires_grad_(true), x = full({3}, 2.0);
  Tensor y = sum(mul(w, x));
  x.fill_(5.0);
  CHECK_THROWS_WITH_AS(y.backward(),
                       doctest::Contains("backward of 'mul': its input 1 [3] was changed in place after the forward"),
                       Error);
  // A weight changed under NoGradGuard (an optimizer step, a load) between forward and backward.
  Tensor a = randn({2, 3}), weight = randn({3, 4}).requires_grad_(true);
  Tensor z = sum(matmul(a, weight));
  {
    NoGradGuard no_grad;
    weight.add_(from_vector(std::vector<float>(12, 1.0f), {3, 4}));
  }
  CHECK_THROWS_WITH_AS(z.backward(), doctest::Contains("backward of 'matmul': its input 1 [3, 4] was changed"), Error);
  // The output an op's backward reads (exp keeps it), changed through a detached alias.
  Tensor v = ones({2}).requires_grad_(true);
  Tensor e = exp(v);
  Tensor loss = sum(e);
  e.detach().mul_(2.0);
  CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains("backward of 'exp': its output [2] was changed"), Error);
  // An optimizer step between two backward passes over one retained graph.
  Tensor p = full({2}, 1.0).requires_grad_(true);
  Tensor q = sum(mul(p, p));
  SGD sgd({ParamGroup{{{"p", p}}, false}}, 0.9);
  sgd.set_lr(0.1);
  q.backward(Tensor(), true);
  sgd.step();
  CHECK_THROWS_WITH_AS(q.backward(), doctest::Contains("backward of 'mul': its input 0 [2] was changed"), Error);
  // An op whose backward reads no values (add, views, sums) may see its inputs change, as in torch.
  Tensor w3 = ones({3}).requires_grad_(true), x3 = full({3}, 2.0);
  Tensor y3 = sum(add(w3, x3.reshape({3})));
  x3.fill_(5.0);
  CHECK_NOTHROW(y3.backward());
  CHECK(w3.grad().to_vector<float>() == std::vector<float>{1, 1, 1});
  // Untouched tensors, or ones changed after backward, are fine.
  Tensor w2 = ones({3}).requires_grad_(true), x2 = full({3}, 2.0);
  Tensor y2 = sum(mul(w2, x2));
  y2.backward();
  x2.fill_(5.0);
  CHECK(w2.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
}

}  // namespace bam::test
