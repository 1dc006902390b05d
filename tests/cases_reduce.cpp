// Op-table rows for reductions: sum, mean, var, max/min (all and along a dim), argmax/argmin,
// sum_to_shape. The reference reduces by looping over every input index.
#include <algorithm>
#include <cmath>
#include <limits>

#include "tests/op_table.h"

namespace bam::test {
namespace {

enum class Kind { sum, mean, var_unbiased, var_biased, max, min, argmax, argmin };

// Reduces `x` over `dims` (empty = all) by collecting each output's inputs in order.
Ref reduce_ref(const Ref& x, Shape dims, bool keepdim, Kind kind) {
  if (dims.empty())
    for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
  for (auto& d : dims)
    if (d < 0) d += x.dim();
  auto reduced = [&](int64_t d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
  Shape kept_shape;
  for (int64_t d = 0; d < x.dim(); ++d) kept_shape.push_back(reduced(d) ? 1 : x.shape[d]);
  std::vector<std::vector<double>> groups(shape_numel(kept_shape));
  Ref kept(kept_shape);
  for (const Shape& index : all_indices(x.shape)) {
    Shape k = index;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (reduced(d)) k[d] = 0;
    groups[kept.offset(k)].push_back(x.at(index));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& v = groups[g];
    double n = static_cast<double>(v.size()), result = 0;
    double total = 0;
    for (double e : v) total += e;
    switch (kind) {
      case Kind::sum: result = total; break;
      case Kind::mean: result = total / n; break;
      case Kind::var_unbiased:
      case Kind::var_biased: {
        double m = total / n, ss = 0;
        for (double e : v) ss += (e - m) * (e - m);
        result = ss / (kind == Kind::var_unbiased ? n - 1 : n);
        break;
      }
      case Kind::max: result = *std::max_element(v.begin(), v.end()); break;
      case Kind::min: result = *std::min_element(v.begin(), v.end()); break;
      case Kind::argmax: result = static_cast<double>(std::max_element(v.begin(), v.end()) - v.begin()); break;
      case Kind::argmin: result = static_cast<double>(std::min_element(v.begin(), v.end()) - v.begin()); break;
    }
    kept.data[g] = result;
  }
  if (keepdim) return kept;
  Shape out_shape;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!reduced(d)) out_shape.push_back(x.shape[d]);
  kept.shape = out_shape;
  return kept;
}

void add_reduction(std::vector<OpCase>& cases, const std::string& name, Kind kind,
                   std::function<Tensor(const Tensor&, const Shape&, bool)> op, Values values = Values::normal) {
  struct Config {
    Shape shape;
    Shape dims;
    bool keepdim;
    Layout layout;
  };
  const Config configs[] = {
      {{3, 4, 5}, {}, false, Layout::contiguous},   // everything
      {{3, 4, 5}, {1}, false, Layout::transposed},  // the middle dim
      {{3, 4, 5}, {-1}, true, Layout::contiguous},  // rows, keepdim
      {{3, 4, 5}, {0, 2}, false, Layout::strided},  // non-adjacent dims
      {{3, 4, 5}, {0, 1}, true, Layout::contiguous},
      {{6, 7}, {0}, false, Layout::contiguous},     // column reduction
  };
  for (const auto& c : configs) {
    std::string label = name + " dims " + shape_str(c.dims) + (c.keepdim ? " keepdim" : "") + " of " + shape_str(c.shape);
    bool grad = kind != Kind::argmax && kind != Kind::argmin;
    Shape dims = c.dims;
    bool keep = c.keepdim;
    cases.push_back({label, {{c.shape, values, c.layout, grad}},
                     [op, dims, keep](const std::vector<Tensor>& x) { return op(x[0], dims, keep); },
                     [dims, keep, kind](const std::vector<Ref>& r) { return reduce_ref(r[0], dims, keep, kind); },
                     grad});
  }
}

}  // namespace

std::vector<OpCase> reduction_cases() {
  std::vector<OpCase> cases;
  add_reduction(cases, "sum", Kind::sum, [](const Tensor& x, const Shape& d, bool k) { return sum(x, d, k); });
  add_reduction(cases, "mean", Kind::mean, [](const Tensor& x, const Shape& d, bool k) { return mean(x, d, k); });
  add_reduction(cases, "var (unbiased)", Kind::var_unbiased,
                [](const Tensor& x, const Shape& d, bool k) { return var(x, d, true, k); });
  add_reduction(cases, "var (biased)", Kind::var_biased,
                [](const Tensor& x, const Shape& d, bool k) { return var(x, d, false, k); });
  // max/min/argmax/argmin reduce one dim.
  for (int64_t dim : {0, 1, -1}) {
    for (bool keep : {false, true}) {
      std::string suffix = " dim " + std::to_string(dim) + (keep ? " keepdim" : "");
      cases.push_back({"max" + suffix, {{{3, 4, 5}, Values::distinct, Layout::transposed}},
                       [dim, keep](const std::vector<Tensor>& x) { return max(x[0], dim, keep); },
                       [dim, keep](const std::vector<Ref>& r) { return reduce_ref(r[0], {dim}, keep, Kind::max); }});
      cases.push_back({"min" + suffix, {{{3, 4, 5}, Values::distinct, Layout::strided}},
                       [dim, keep](const std::vector<Tensor>& x) { return min(x[0], dim, keep); },
                       [dim, keep](const std::vector<Ref>& r) { return reduce_ref(r[0], {dim}, keep, Kind::min); }});
      cases.push_back({"argmax" + suffix, {{{3, 4, 5}, Values::distinct, Layout::contiguous, false}},
                       [dim, keep](const std::vector<Tensor>& x) { return argmax(x[0], dim, keep); },
                       [dim, keep](const std::vector<Ref>& r) { return reduce_ref(r[0], {dim}, keep, Kind::argmax); },
                       false});
      cases.push_back({"argmin" + suffix, {{{3, 4, 5}, Values::distinct, Layout::transposed, false}},
                       [dim, keep](const std::vector<Tensor>& x) { return argmin(x[0], dim, keep); },
                       [dim, keep](const std::vector<Ref>& r) { return reduce_ref(r[0], {dim}, keep, Kind::argmin); },
                       false});
    }
  }
  cases.push_back({"max (all)", {{{4, 5}, Values::distinct, Layout::transposed}},
                   [](const std::vector<Tensor>& x) { return max(x[0]); },
                   [](const std::vector<Ref>& r) { return reduce_ref(r[0], {}, false, Kind::max); }});
  cases.push_back({"min (all)", {{{4, 5}, Values::distinct}},
                   [](const std::vector<Tensor>& x) { return min(x[0]); },
                   [](const std::vector<Ref>& r) { return reduce_ref(r[0], {}, false, Kind::min); }});
  cases.push_back({"sum_to_shape [2,3,4] -> [3,1]", {{{2, 3, 4}, Values::normal, Layout::strided}},
                   [](const std::vector<Tensor>& x) { return sum_to_shape(x[0], {3, 1}); },
                   [](const std::vector<Ref>& r) {
                     Ref out({3, 1});
                     for (const Shape& i : all_indices(r[0].shape)) out.at({i[1], 0}) += r[0].at(i);
                     return out;
                   }});
  return cases;
}

}  // namespace bam::test
