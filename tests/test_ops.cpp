// Runs the op-test table: every op's forward (f64 and f32) against its naive reference, and its
// gradient against central finite differences in f64, over broadcasting and non-contiguous inputs;
// and the f32 GELU's AVX2 loop against its portable specification.
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <utility>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gelu.h"
#include "tests/op_table.h"

namespace bam::test {
namespace {

void run_case(const OpCase& c, InputMaker& maker) {
  std::vector<std::vector<double>> values;
  std::vector<Ref> refs;
  for (const InputSpec& spec : c.inputs) {
    values.push_back(maker.values(spec));
    Ref r(spec.shape);
    r.data = values.back();
    refs.push_back(r);
  }
  auto make_inputs = [&](DType dtype) {
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < c.inputs.size(); ++i) inputs.push_back(maker.make(c.inputs[i], values[i], dtype));
    return inputs;
  };
  if (c.reference) {
    Ref expected = c.reference(refs);
    {
      NoGradGuard no_grad;
      Tensor out64 = c.run(make_inputs(DType::f64));
      check_close(out64, expected, tolerance_for(out64.dtype()), c.name + " forward f64");
      Tensor out32 = c.run(make_inputs(DType::f32));
      Tolerance tol = is_floating(out32.dtype()) ? c.f32_tolerance : tolerance_for(out32.dtype());
      check_close(out32, expected, tol, c.name + " forward f32");
    }
  }
  if (c.gradient) {
    std::vector<bool> check;
    for (const InputSpec& spec : c.inputs)
      check.push_back(spec.grad && spec.values != Values::mask && spec.values != Values::index);
    check_gradients(c.run, make_inputs(DType::f64), check, maker, c.name);
  }
}

}  // namespace

TEST_CASE("op table: forward against references, gradients against finite differences") {
  InputMaker maker(test_seed("op table"));
  for (const OpCase& c : all_op_cases()) {
    CAPTURE(c.name);
    run_case(c, maker);
  }
}

TEST_CASE("op table covers every op of the API") {
  // The public ops of engine/ops.h and the Tensor view methods; each must have a row.
  // clang-format off
  const char* required[] = {
      "add", "sub", "mul", "div", "maximum", "minimum", "residual_add", "add scalar", "mul scalar", "scalar sub",
      "scalar div", "neg", "exp", "log", "sqrt", "rsqrt", "abs", "square", "pow", "clamp", "clamp_min", "tanh", "erf",
      "sigmoid", "relu", "gelu (erf)", "gelu (tanh)", "eq", "ne", "lt", "le", "gt", "ge", "compare with scalar",
      "logical_not", "where", "masked_fill", "sum", "mean", "var", "max", "min", "argmax", "argmin", "sum_to_shape",
      "matmul", "linear", "gelu_linear", "softmax", "log_softmax", "layer_norm", "batch_norm train", "batch_norm eval",
      "dropout", "drop_path", "l2_normalize", "soft_cross_entropy", "cross_entropy", "patchify", "bicubic", "reshape",
      "view", "permute", "transpose", "narrow", "slice", "select", "expand", "unsqueeze", "flatten", "contiguous",
      "clone", "cat", "stack", "split", "chunk", "index_select", "gather", "scatter_add", "topk", "attention"};
  // clang-format on
  // A row belongs to the longest required name that its own name starts with as a whole word
  // ("add scalar (f32)" is add scalar's, not add's; "expand" is not exp's; "flatten(1)" and
  // "linear, bias ..." are flatten's and linear's).
  auto cases = all_op_cases();
  std::map<std::string, int> rows_of;
  for (const auto& c : cases) {
    std::string_view owner;
    for (const std::string_view op : required) {
      const bool word_prefix =
          c.name.rfind(op, 0) == 0 && (c.name.size() == op.size() || std::strchr(" (,", c.name[op.size()]));
      if (word_prefix && op.size() > owner.size()) owner = op;
    }
    CHECK_MESSAGE(!owner.empty(), "op-table row " << c.name << " names no public op");
    ++rows_of[std::string(owner)];
  }
  for (const char* op : required) CHECK_MESSAGE(rows_of[op] > 0, "no op-table row for " << op);
  std::set<std::string> names;
  for (const auto& c : cases) CHECK_MESSAGE(names.insert(c.name).second, "duplicate row name " << c.name);
}

// The two fused autocast boundaries take operands of two dtypes. The CPU has f32 and f64, which is
// enough to check that each equals its unfused form exactly (the GPU suite checks f32 with bf16/f16).
TEST_CASE("residual_add with a branch of another dtype equals adding the converted branch") {
  InputMaker maker(test_seed("residual_add mixed"));
  InputSpec spec{{4, 6}};
  Tensor stream = maker.make(spec, maker.values(spec), DType::f64).requires_grad_(true);
  Tensor branch = maker.make(spec, maker.values(spec), DType::f32).requires_grad_(true);
  Tensor out = residual_add(stream, branch);
  CHECK(out.dtype() == DType::f64);
  Tensor unfused = add(stream.detach(), branch.detach().to(DType::f64));
  CHECK(max(abs(sub(out.detach(), unfused))).item() == 0.0);
  Tensor upstream = maker.make(spec, maker.values(spec), DType::f64);
  sum(mul(out, upstream)).backward();
  REQUIRE(stream.grad().dtype() == DType::f64);
  REQUIRE(branch.grad().dtype() == DType::f32);
  CHECK(max(abs(sub(stream.grad(), upstream))).item() == 0.0);
  CHECK(max(abs(sub(branch.grad(), upstream.to(DType::f32)))).item() == 0.0);
  CHECK_THROWS_WITH_AS(residual_add(stream, branch.narrow(1, 0, 5)), doctest::Contains("must have the stream's shape"),
                       Error);
  CHECK_THROWS_WITH_AS(residual_add(branch, stream), doctest::Contains("is wider than the stream"), Error);
  // bf16 and f16 are the same width but neither holds the other: refused on every device (the CUDA
  // kernel would round once, where a CPU conversion would have to round twice).
  Tensor bf16_stream = stream.detach().to(DType::bf16), f16_branch = branch.detach().to(DType::f16);
  CHECK_THROWS_WITH_AS(residual_add(bf16_stream, f16_branch), doctest::Contains("is not narrower than the stream"),
                       Error);
}

TEST_CASE("layer_norm into another dtype equals layer_norm then a cast, forward and backward") {
  InputMaker maker(test_seed("layer_norm out dtype"));
  InputSpec xs{{5, 16}}, ps{{16}};
  auto leaf = [&](const InputSpec& spec) {
    return maker.make(spec, maker.values(spec), DType::f64).requires_grad_(true);
  };
  auto twin = [](const Tensor& t) { return t.detach().requires_grad_(true); };
  Tensor x = leaf(xs), w = leaf(ps), b = leaf(ps);
  Tensor x2 = twin(x), w2 = twin(w), b2 = twin(b);
  Tensor fused = layer_norm(x, w, b, 1e-6, DType::f32);
  Tensor unfused = layer_norm(x2, w2, b2, 1e-6).to(DType::f32);
  REQUIRE(fused.dtype() == DType::f32);
  CHECK(max(abs(sub(fused.detach(), unfused.detach()))).item() == 0.0);
  Tensor upstream = maker.make(xs, maker.values(xs), DType::f32);
  sum(mul(fused, upstream)).backward();
  sum(mul(unfused, upstream)).backward();
  for (auto [a, e] : {std::pair{x, x2}, {w, w2}, {b, b2}}) {
    REQUIRE(a.grad().dtype() == DType::f64);  // gradients come back in the input's dtype
    CHECK(max(abs(sub(a.grad(), e.grad()))).item() == 0.0);
  }
  CHECK_THROWS_WITH_AS(layer_norm(x, w, b, 1e-6, DType::i32), doctest::Contains("output dtype must be floating"),
                       Error);
}

}  // namespace bam::test

namespace bam::test {

// The f32 GELU's AVX-512 and AVX2 loops against the portable one (their specification): the same
// formula with a polynomial exp and FMA contraction, over a grid that covers the erf polynomial's
// whole range, the exp cut-off at |x| = 13.2, the tails of a range that is not a whole number of
// vectors (of 8 or 16), and
// infinities, NaN and signed zeros, which must come out alike. Phi(x) = (1 +- erf) / 2 carries
// erf's absolute rounding (an ulp of 1, 6e-8) in both loops, so the two agree to a few of those
// in Phi (times |x| forward, times dy backward) plus a relative 1e-6 of what is left. Where Phi
// rounds to 0 (x below -5.5) the gradient is the density term x phi(x) alone, compared relatively
// down to where exp underflows: an exp off by more than 2e-6 there fails.
TEST_CASE("f32 GELU: the AVX-512 and AVX2 loops agree with the portable loop, forward and backward") {
  std::vector<cpu::GeluLoop> twins;
  for (cpu::GeluLoop limit : {cpu::GeluLoop::widest, cpu::GeluLoop::at_most_avx2}) {
    const std::string name = cpu::gelu_loop_name(limit);
    if (name != "portable" && (twins.empty() || name != cpu::gelu_loop_name(twins.back()))) twins.push_back(limit);
  }
  MESSAGE("GELU loops compared with the portable one here: ", twins.size() == 2 ? "avx512 and avx2"
                                                              : twins.empty() ? "none (no AVX2/FMA, or BAM_CPU_AVX2=0)"
                                                                              : cpu::gelu_loop_name(twins[0]));
  CHECK(std::string(cpu::gelu_loop_name(cpu::GeluLoop::portable)) == "portable");
  CHECK((std::string(cpu::gelu_loop_name()) == "avx512") == cpu::cpu_has_avx512());
  std::vector<float> x;
  for (int i = -200000; i <= 200000; ++i) x.push_back(static_cast<float>(i) * 1e-4f);  // [-20, 20]
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 13.2f, -13.2f, 13.3f, -13.3f, 1e30f, -1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN()})
    x.push_back(v);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> dy(x.size());
  for (size_t i = 0; i < x.size(); ++i) dy[i] = 1.0f + 0.25f * static_cast<float>(i % 7);
  const double kPhiFloor = 1.5e-7;  // a few roundings of erf near 1 (an ulp of 1 is 6e-8)
  for (cpu::GeluLoop twin : twins) {
    const char* twin_name = cpu::gelu_loop_name(twin);
    CAPTURE(twin_name);
    for (int64_t len : {n, n - 1, int64_t{7}, int64_t{9}, int64_t{15}, int64_t{17}, int64_t{33}}) {
      CAPTURE(len);
      const int64_t start = n - len;  // the specials at the end are in every range
      std::vector<float> y_port(len), y_avx(len), dx_port(len), dx_avx(len);
      cpu::gelu_erf_forward_f32(x.data() + start, y_port.data(), len, cpu::GeluLoop::portable);
      cpu::gelu_erf_forward_f32(x.data() + start, y_avx.data(), len, twin);
      cpu::gelu_erf_backward_f32(x.data() + start, dy.data() + start, dx_port.data(), len, cpu::GeluLoop::portable);
      cpu::gelu_erf_backward_f32(x.data() + start, dy.data() + start, dx_avx.data(), len, twin);
      double worst = 0;  // |difference| / allowed
      int64_t unlike = 0;
      auto compare = [&](float p, float a, double allowed) {
        if (!std::isfinite(p) || !std::isfinite(a)) {
          unlike += !(std::isnan(p) == std::isnan(a) && (std::isnan(p) || p == a));
          return;
        }
        const double d = std::fabs(double(p) - double(a)) / allowed;
        worst = std::max(worst, d);
        unlike += !(d <= 1.0);
      };
      for (int64_t i = 0; i < len; ++i) {
        const double xi = x[start + i], g = dy[start + i];
        const double density_term = std::fabs(xi) * 0.3989422804014327 * std::exp(-0.5 * xi * xi);
        // Below x = -5.5 Phi rounds to 0 in both loops: the gradient is the density term alone, held
        // to a relative 2e-6 down to the AVX2 exp's cut-off (|x| = 13.21: beyond it the AVX2 loop
        // gives 0 where libm's subnormals make gradients up to about 2e-37).
        const double phi_floor = xi < -5.5 ? 0.0 : kPhiFloor;
        compare(y_port[i], y_avx[i], kPhiFloor * std::fabs(xi) + 1e-6 * std::fabs(double(y_port[i])) + 1e-38);
        compare(dx_port[i], dx_avx[i],
                g * (phi_floor + 2e-6 * density_term) + 1e-6 * std::fabs(double(dx_port[i])) + 1e-36);
      }
      MESSAGE(twin_name << ", length " << len << ": worst difference " << worst << " of the allowed");
      CHECK(unlike == 0);
    }
  }
}

}  // namespace bam::test
