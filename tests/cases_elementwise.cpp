// Op-table rows for elementwise ops: binary arithmetic with broadcasting, scalar forms, unary maps,
// comparisons, where and masked_fill. References are plain loops over Ref values.
#include <cmath>

#include "tests/op_table.h"

namespace bam::test {
namespace {

Shape naive_broadcast(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n, 1);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i + a.size() >= n ? a[i + a.size() - n] : 1;
    int64_t db = i + b.size() >= n ? b[i + b.size() - n] : 1;
    out[i] = std::max(da, db);
  }
  return out;
}

Ref map_ref(const Ref& x, const std::function<double(double)>& f) {
  Ref out(x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) out.data[i] = f(x.data[i]);
  return out;
}

Ref zip_ref(const Ref& a, const Ref& b, const std::function<double(double, double)>& f) {
  Ref out(naive_broadcast(a.shape, b.shape));
  for (const Shape& index : all_indices(out.shape)) out.at(index) = f(broadcast_at(a, index), broadcast_at(b, index));
  return out;
}

using Fn1 = std::function<double(double)>;
using Fn2 = std::function<double(double, double)>;

void add_binary(std::vector<OpCase>& cases, const std::string& name, Tensor (*op)(const Tensor&, const Tensor&),
                Fn2 f, Values a_values, Values b_values) {
  struct Shapes {
    Shape a, b;
    Layout la, lb;
    const char* label;
  };
  const Shapes shapes[] = {
      {{3, 4}, {3, 4}, Layout::contiguous, Layout::contiguous, "same shape"},
      {{3, 1}, {1, 4}, Layout::contiguous, Layout::contiguous, "outer broadcast"},
      {{2, 3, 4}, {4}, Layout::transposed, Layout::contiguous, "row broadcast, transposed a"},
      {{4}, {2, 3, 4}, Layout::strided, Layout::strided, "left broadcast, strided"},
      {{2, 1, 3}, {2, 4, 1}, Layout::contiguous, Layout::transposed, "both broadcast"},
      {{}, {3, 2}, Layout::contiguous, Layout::contiguous, "0-d with matrix"},
  };
  for (const auto& s : shapes) {
    cases.push_back({name + " (" + s.label + ")",
                     {{s.a, a_values, s.la}, {s.b, b_values, s.lb}},
                     [op](const std::vector<Tensor>& x) { return op(x[0], x[1]); },
                     [f](const std::vector<Ref>& r) { return zip_ref(r[0], r[1], f); }});
    cases.back().broadcasts = true;
  }
}

void add_unary(std::vector<OpCase>& cases, const std::string& name, std::function<Tensor(const Tensor&)> op, Fn1 f,
               Values values, Layout layout = Layout::transposed) {
  cases.push_back({name, {{{3, 5}, values, layout}},
                   [op](const std::vector<Tensor>& x) { return op(x[0]); },
                   [f](const std::vector<Ref>& r) { return map_ref(r[0], f); }});
}

void add_compare(std::vector<OpCase>& cases, const std::string& name, Tensor (*op)(const Tensor&, const Tensor&),
                 std::function<bool(double, double)> f) {
  cases.push_back({name,
                   {{{3, 4}, Values::index, Layout::transposed, false, 3}, {{4}, Values::index, Layout::contiguous, false, 3}},
                   [op](const std::vector<Tensor>& x) { return op(x[0], x[1]); },
                   [f](const std::vector<Ref>& r) { return zip_ref(r[0], r[1], [f](double a, double b) { return f(a, b) ? 1.0 : 0.0; }); },
                   false});
  cases.push_back({name + " (floats)",
                   {{{2, 3}, Values::normal, Layout::contiguous, false}, {{2, 3}, Values::normal, Layout::strided, false}},
                   [op](const std::vector<Tensor>& x) { return op(x[0], x[1]); },
                   [f](const std::vector<Ref>& r) { return zip_ref(r[0], r[1], [f](double a, double b) { return f(a, b) ? 1.0 : 0.0; }); },
                   false});
}

double gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

}  // namespace

std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> cases;
  add_binary(cases, "add", add, [](double a, double b) { return a + b; }, Values::normal, Values::normal);
  // residual_add with one dtype (the mixed-dtype form is in tests/test_ops.cpp); no broadcasting.
  cases.push_back({"residual_add", {{{3, 5}, Values::normal, Layout::transposed}, {{3, 5}}},
                   [](const std::vector<Tensor>& x) { return residual_add(x[0], x[1]); },
                   [](const std::vector<Ref>& r) {
                     return zip_ref(r[0], r[1], [](double a, double b) { return a + b; });
                   }});
  add_binary(cases, "sub", sub, [](double a, double b) { return a - b; }, Values::normal, Values::normal);
  add_binary(cases, "mul", mul, [](double a, double b) { return a * b; }, Values::normal, Values::normal);
  add_binary(cases, "div", div, [](double a, double b) { return a / b; }, Values::normal, Values::positive);
  add_binary(cases, "maximum", maximum, [](double a, double b) { return a >= b ? a : b; }, Values::distinct,
             Values::distinct_between);
  add_binary(cases, "minimum", minimum, [](double a, double b) { return a <= b ? a : b; }, Values::distinct,
             Values::distinct_between);

  add_unary(cases, "add scalar", [](const Tensor& x) { return add(x, 1.5); }, [](double x) { return x + 1.5; },
            Values::normal);
  add_unary(cases, "sub scalar", [](const Tensor& x) { return sub(x, 0.25); }, [](double x) { return x - 0.25; },
            Values::normal);
  add_unary(cases, "scalar sub", [](const Tensor& x) { return sub(2.0, x); }, [](double x) { return 2.0 - x; },
            Values::normal);
  add_unary(cases, "mul scalar", [](const Tensor& x) { return mul(x, -3.0); }, [](double x) { return -3.0 * x; },
            Values::normal);
  add_unary(cases, "div scalar", [](const Tensor& x) { return div(x, 4.0); }, [](double x) { return x / 4.0; },
            Values::normal);
  add_unary(cases, "scalar div", [](const Tensor& x) { return div(3.0, x); }, [](double x) { return 3.0 / x; },
            Values::positive);
  add_unary(cases, "neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, Values::normal);
  add_unary(cases, "exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); },
            Values::normal);
  add_unary(cases, "log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); },
            Values::positive);
  add_unary(cases, "sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); },
            Values::positive);
  add_unary(cases, "rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); },
            Values::positive);
  add_unary(cases, "abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::fabs(x); },
            Values::away);
  add_unary(cases, "square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; },
            Values::normal);
  add_unary(cases, "pow 2.5", [](const Tensor& x) { return pow(x, 2.5); }, [](double x) { return std::pow(x, 2.5); },
            Values::positive);
  add_unary(cases, "pow -1", [](const Tensor& x) { return pow(x, -1.0); }, [](double x) { return 1.0 / x; },
            Values::positive);
  add_unary(cases, "clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.5); },
            [](double x) { return std::min(0.5, std::max(-0.5, x)); }, Values::away);
  add_unary(cases, "clamp_min", [](const Tensor& x) { return clamp_min(x, 0.5); },
            [](double x) { return std::max(0.5, x); }, Values::away);
  add_unary(cases, "tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); },
            Values::normal);
  add_unary(cases, "erf", [](const Tensor& x) { return erf(x); }, [](double x) { return std::erf(x); },
            Values::normal);
  add_unary(cases, "sigmoid", [](const Tensor& x) { return sigmoid(x); },
            [](double x) { return 1 / (1 + std::exp(-x)); }, Values::normal);
  add_unary(cases, "relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
            Values::away);
  add_unary(cases, "gelu (erf)", [](const Tensor& x) { return gelu(x); }, gelu_erf, Values::normal);
  add_unary(cases, "gelu (tanh)", [](const Tensor& x) { return gelu(x, GeluForm::tanh); }, gelu_tanh,
            Values::normal, Layout::strided);

  add_compare(cases, "eq", eq, [](double a, double b) { return a == b; });
  add_compare(cases, "ne", ne, [](double a, double b) { return a != b; });
  add_compare(cases, "lt", lt, [](double a, double b) { return a < b; });
  add_compare(cases, "le", le, [](double a, double b) { return a <= b; });
  add_compare(cases, "gt", gt, [](double a, double b) { return a > b; });
  add_compare(cases, "ge", ge, [](double a, double b) { return a >= b; });
  cases.push_back({"compare with scalar (gt 0.25)",
                   {{{3, 4}, Values::normal, Layout::strided, false}},
                   [](const std::vector<Tensor>& x) { return gt(x[0], 0.25); },
                   [](const std::vector<Ref>& r) { return map_ref(r[0], [](double a) { return a > 0.25 ? 1.0 : 0.0; }); },
                   false});
  cases.push_back({"logical_not",
                   {{{3, 4}, Values::mask, Layout::transposed, false}},
                   [](const std::vector<Tensor>& x) { return logical_not(x[0]); },
                   [](const std::vector<Ref>& r) { return map_ref(r[0], [](double a) { return a != 0 ? 0.0 : 1.0; }); },
                   false});

  cases.push_back({"where (broadcast condition)",
                   {{{3, 1}, Values::mask, Layout::contiguous, false}, {{3, 4}, Values::normal, Layout::transposed},
                    {{4}, Values::normal}},
                   [](const std::vector<Tensor>& x) { return where(x[0], x[1], x[2]); },
                   [](const std::vector<Ref>& r) {
                     Ref out({3, 4});
                     for (const Shape& i : all_indices(out.shape))
                       out.at(i) = broadcast_at(r[0], i) != 0 ? broadcast_at(r[1], i) : broadcast_at(r[2], i);
                     return out;
                   }});
  cases.push_back({"masked_fill",
                   {{{2, 3, 4}, Values::normal, Layout::strided}, {{3, 4}, Values::mask, Layout::contiguous, false}},
                   [](const std::vector<Tensor>& x) { return masked_fill(x[0], x[1], -7.5); },
                   [](const std::vector<Ref>& r) {
                     Ref out(r[0].shape);
                     for (const Shape& i : all_indices(out.shape))
                       out.at(i) = broadcast_at(r[1], i) != 0 ? -7.5 : r[0].at(i);
                     return out;
                   }});
  return cases;
}

}  // namespace bam::test
