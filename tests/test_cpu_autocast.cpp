// bf16 autocast on the CPU: linear, matmul and gelu_linear round their GEMM operands to bf16 (and
// sum in f32), forward and backward, and backward does so even after the guard is gone. Checked
// against the same ops in plain f32 on operands rounded beforehand.
#include <cmath>
#include <random>

#include "engine/autocast.h"
#include "engine/dtype.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm.h"
#include "tests/support.h"

namespace bam::test {

namespace {

float bf16_round(float x) { return bf16_bits_to_float(float_to_bf16_bits(x)); }

// Random f32 values; with `representable`, values that bf16 holds exactly.
std::vector<float> random_values(size_t n, std::mt19937& rng, bool representable) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = representable ? bf16_round(dist(rng)) : dist(rng);
  return v;
}

std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = bf16_round(x);
  return v;
}

Tensor leaf(const std::vector<float>& v, const Shape& shape) {
  Tensor t = from_vector(v, shape);
  t.requires_grad_(true);
  return t;
}

// The largest |a - b| relative to the largest |b| (sums with cancellation make elementwise relative
// errors meaningless near zero).
double worst_relative(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double top = 0.0, worst = 0.0;
  for (float v : y) top = std::max(top, double(std::abs(v)));
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(x[i]) - y[i]));
  return top > 0.0 ? worst / top : worst;
}

struct Grads {
  Tensor out, dx, dw, db;
};

// f(x, w, b) summed against fixed bf16-exact weights c (so the incoming gradient is c itself,
// which rounding leaves alone), forward under `dtype` autocast, backward after the guard is gone.
template <typename F>
Grads run(F f, DType dtype, const std::vector<float>& x, const Shape& xs, const std::vector<float>& w, const Shape& ws,
          const std::vector<float>& b, const Tensor& c) {
  Tensor tx = leaf(x, xs), tw = leaf(w, ws), tb = leaf(b, {static_cast<int64_t>(b.size())});
  Tensor out;
  {
    AutocastGuard guard(dtype);
    out = f(tx, tw, tb);
  }
  sum(mul(out, c)).backward();
  return {out.detach(), tx.grad(), tw.grad(), tb.grad()};
}

// bf16 on unrounded operands must match f32 on rounded ones (to f32 summation order), and differ
// from f32 on the unrounded ones (else nothing was rounded).
template <typename F>
void check_op(const char* name, F f, int64_t rows, int64_t in, int64_t out_features, bool weight_is_rhs) {
  std::mt19937 rng(7);
  const Shape xs{rows, in};
  const Shape ws = weight_is_rhs ? Shape{in, out_features} : Shape{out_features, in};
  const std::vector<float> x = random_values(size_t(rows * in), rng, false);
  const std::vector<float> w = random_values(size_t(in * out_features), rng, false);
  const std::vector<float> b = random_values(size_t(out_features), rng, false);
  const Tensor c = from_vector(random_values(size_t(rows * out_features), rng, true), {rows, out_features});

  const Grads bf16 = run(f, DType::bf16, x, xs, w, ws, b, c);
  const Grads spec = run(f, DType::f32, rounded(x), xs, rounded(w), ws, b, c);
  const Grads plain = run(f, DType::f32, x, xs, w, ws, b, c);
  const double tol = 2e-6;  // f32 sums of a few hundred terms, in another order (seen: 2e-7)
  CHECK_MESSAGE(worst_relative(bf16.out, spec.out) < tol, name, " forward");
  CHECK_MESSAGE(worst_relative(bf16.dx, spec.dx) < tol, name, " d input");
  CHECK_MESSAGE(worst_relative(bf16.dw, spec.dw) < tol, name, " d weight");
  CHECK_MESSAGE(worst_relative(bf16.db, spec.db) < tol, name, " d bias");
  // Rounding to 8 significant bits moves the results by ~1e-3 of their largest: far outside the
  // tolerance.
  MESSAGE(name, ": bf16 vs spec ", worst_relative(bf16.out, spec.out), " ", worst_relative(bf16.dx, spec.dx), " ",
          worst_relative(bf16.dw, spec.dw), "; bf16 vs unrounded ", worst_relative(bf16.out, plain.out), " ",
          worst_relative(bf16.dx, plain.dx), " ", worst_relative(bf16.dw, plain.dw));
  CHECK_MESSAGE(worst_relative(bf16.out, plain.out) > 100 * tol, name, " forward is rounded");
  CHECK_MESSAGE(worst_relative(bf16.dx, plain.dx) > 100 * tol, name, " d input is rounded");
  CHECK_MESSAGE(worst_relative(bf16.dw, plain.dw) > 100 * tol, name, " d weight is rounded");
}

}  // namespace

TEST_CASE("bf16 autocast on the CPU: linear, matmul and gelu_linear round their GEMM operands") {
  MESSAGE("bf16 GEMM: ", cpu::gemm_bf16_kernel_name());
  // 300 x 96 @ 96 x 80 is big enough for the packed kernels (AMX or AVX-512 BF16, where the CPU has them).
  check_op(
      "linear", [](const Tensor& x, const Tensor& w, const Tensor& b) { return linear(x, w, b); }, 300, 96, 80, false);
  check_op(
      "matmul", [](const Tensor& x, const Tensor& w, const Tensor& b) { return add(matmul(x, w), b); }, 300, 96, 80,
      true);
  // gelu_linear recomputes gelu(h) in its backward and multiplies with it there: under bf16 it
  // must give exactly what linear(gelu(h)) gives (the same GEMMs on the same values), rounded.
  std::mt19937 rng(11);
  const int64_t rows = 200, in = 64, out_features = 48;
  const std::vector<float> h = random_values(size_t(rows * in), rng, false);
  const std::vector<float> w = random_values(size_t(in * out_features), rng, false);
  const std::vector<float> b = random_values(size_t(out_features), rng, false);
  const Tensor c = from_vector(random_values(size_t(rows * out_features), rng, true), {rows, out_features});
  const auto fused = [](const Tensor& x, const Tensor& wt, const Tensor& bt) { return gelu_linear(x, wt, bt); };
  const auto split = [](const Tensor& x, const Tensor& wt, const Tensor& bt) { return linear(gelu(x), wt, bt); };
  const Grads one = run(fused, DType::bf16, h, {rows, in}, w, {out_features, in}, b, c);
  const Grads two = run(split, DType::bf16, h, {rows, in}, w, {out_features, in}, b, c);
  const Grads plain = run(fused, DType::f32, h, {rows, in}, w, {out_features, in}, b, c);
  CHECK(worst_relative(one.out, two.out) == 0.0);
  CHECK(worst_relative(one.dx, two.dx) == 0.0);
  CHECK(worst_relative(one.dw, two.dw) == 0.0);
  CHECK(worst_relative(one.db, two.db) == 0.0);
  CHECK(worst_relative(one.dw, plain.dw) > 2e-4);  // and it is rounded
}

// Linear's backward under bf16 takes the bias gradient inside the weight gradient's GEMM
// (gemm_f32_bf16_bias_grad): the same bits as that GEMM alone and sum(g, {0}). One output (whose
// sum(g, {0}) adds in another order) goes the separate way. (tests/test_gemm_bf16.cpp checks the
// forward's bias inside the GEMM against the copy it replaced.)
TEST_CASE("bf16 autocast on the CPU: linear's fused bias gradient has the separate ops' bits") {
  std::mt19937 rng(13);
  for (int64_t out_features : {int64_t{80}, int64_t{1}}) {
    CAPTURE(out_features);
    const int64_t rows = 300, in = 96;
    const std::vector<float> x = random_values(size_t(rows * in), rng, false);
    const std::vector<float> w = random_values(size_t(in * out_features), rng, false);
    const std::vector<float> b = random_values(size_t(out_features), rng, false);
    // An incoming gradient whose column sums depend on the order of the additions.
    std::vector<float> g = random_values(size_t(rows * out_features), rng, false);
    for (int64_t j = 0; j < out_features; ++j) {
      g[size_t(j)] = 0x1p40f;
      g[size_t((rows - 1) * out_features + j)] = -0x1p40f;
    }
    const Tensor c = from_vector(g, {rows, out_features});
    const Grads fused = run([](const Tensor& tx, const Tensor& tw, const Tensor& tb) { return linear(tx, tw, tb); },
                            DType::bf16, x, {rows, in}, w, {out_features, in}, b, c);
    const Tensor tx = from_vector(x, {rows, in});
    Tensor weight_grad;
    {
      AutocastGuard guard(DType::bf16);
      weight_grad = matmul(c.t(), tx);
    }
    CHECK(worst_relative(fused.db, sum(c, {0})) == 0.0);
    CHECK(worst_relative(fused.dw, weight_grad) == 0.0);
  }
}

TEST_CASE("bf16 autocast on the CPU: batched matmul, and backward keeps the forward's setting") {
  std::mt19937 rng(5);
  const std::vector<float> a = random_values(2 * 100 * 48, rng, false), b = random_values(2 * 48 * 40, rng, false);
  const Tensor c = from_vector(random_values(2 * 100 * 40, rng, true), {2, 100, 40});
  // out = a @ b over a batch of 2, summed against c; returns out, da, db.
  const auto run_batched = [&](const std::vector<float>& av, const std::vector<float>& bv, DType forward,
                               DType backward) {
    Tensor ta = leaf(av, {2, 100, 48}), tb = leaf(bv, {2, 48, 40});
    Tensor out;
    {
      AutocastGuard guard(forward);
      out = matmul(ta, tb);
    }
    {
      AutocastGuard guard(backward);  // whatever is set now must not matter
      sum(mul(out, c)).backward();
    }
    return std::vector<Tensor>{out.detach(), ta.grad(), tb.grad()};
  };
  const auto bf16 = run_batched(a, b, DType::bf16, DType::f32);
  const auto spec = run_batched(rounded(a), rounded(b), DType::f32, DType::f32);
  for (size_t i = 0; i < 3; ++i) CHECK_MESSAGE(worst_relative(bf16[i], spec[i]) < 2e-6, "batched, tensor ", i);
  // Recorded in f32, differentiated inside a bf16 guard: the backward stays f32, bit for bit.
  const auto plain = run_batched(a, b, DType::f32, DType::f32);
  const auto plain_under_bf16 = run_batched(a, b, DType::f32, DType::bf16);
  for (size_t i = 0; i < 3; ++i) CHECK_MESSAGE(worst_relative(plain_under_bf16[i], plain[i]) == 0.0, "tensor ", i);
}

TEST_CASE("bf16 autocast on the CPU leaves f64 and the non-GEMM ops alone") {
  std::mt19937 rng(3);
  const std::vector<float> v = random_values(64, rng, false);
  Tensor x = from_vector(v, {8, 8});
  Tensor x64 = x.to(DType::f64);
  Tensor y64, s32, s32_plain;
  {
    AutocastGuard guard(DType::bf16);
    y64 = matmul(x64, x64);  // f64 products stay exact
    s32 = softmax(x, -1);
  }
  s32_plain = softmax(x, -1);
  CHECK(y64.dtype() == DType::f64);
  CHECK(worst_relative(y64.to(DType::f32), matmul(x64, x64).to(DType::f32)) == 0.0);
  CHECK(worst_relative(s32, s32_plain) == 0.0);
}

}  // namespace bam::test
