// Runs the op-test table: every op's forward (f64 and f32) against its naive reference, and its
// gradient against central finite differences in f64, over broadcasting and non-contiguous inputs.
#include <set>

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
  const char* required[] = {
      "add", "sub", "mul", "div", "maximum", "minimum", "add scalar", "mul scalar", "scalar div", "neg", "exp",
      "log", "sqrt", "rsqrt", "abs", "square", "pow", "clamp", "clamp_min", "tanh", "erf", "sigmoid", "relu",
      "gelu (erf)", "gelu (tanh)", "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "where", "masked_fill",
      "sum", "mean", "var", "max", "min", "argmax", "argmin", "sum_to_shape", "matmul", "linear", "softmax",
      "log_softmax", "layer_norm", "batch_norm train", "batch_norm eval", "dropout", "drop_path", "l2_normalize",
      "soft_cross_entropy", "cross_entropy", "patchify", "bicubic", "reshape", "view", "permute", "transpose",
      "narrow", "slice", "select", "expand", "unsqueeze", "flatten", "contiguous", "clone", "cat", "stack", "split",
      "chunk", "index_select", "gather", "scatter_add", "topk", "attention"};
  auto cases = all_op_cases();
  for (const char* op : required) {
    bool found = false;
    for (const auto& c : cases) found = found || c.name.rfind(op, 0) == 0;
    CHECK_MESSAGE(found, "no op-table row for " << op);
  }
  std::set<std::string> names;
  for (const auto& c : cases) CHECK_MESSAGE(names.insert(c.name).second, "duplicate row name " << c.name);
}

}  // namespace bam::test
