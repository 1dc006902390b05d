// Op-table rows for views and data movement: reshape/view/permute/transpose/narrow/slice/select/
// expand/unsqueeze/squeeze/flatten/contiguous/clone, cat/stack/split/chunk, index_select, gather,
// scatter_add and topk. References move Ref elements by index arithmetic.
#include <algorithm>
#include <numeric>

#include "tests/op_table.h"

namespace bam::test {
namespace {

Ref same_data(const Ref& r, Shape shape) {
  Ref out = r;
  out.shape = std::move(shape);
  return out;
}

// out[index] = x[map(index)] over the output shape.
Ref pick(const Ref& x, Shape out_shape, const std::function<Shape(const Shape&)>& map) {
  Ref out(std::move(out_shape));
  for (const Shape& i : all_indices(out.shape)) out.at(i) = x.at(map(i));
  return out;
}

OpCase view_case(const std::string& name, InputSpec spec, std::function<Tensor(const Tensor&)> op,
                 std::function<Ref(const Ref&)> ref) {
  return {name, {spec}, [op](const std::vector<Tensor>& x) { return op(x[0]); },
          [ref](const std::vector<Ref>& r) { return ref(r[0]); }};
}

}  // namespace

std::vector<OpCase> shape_cases() {
  std::vector<OpCase> cases;
  cases.push_back(view_case("reshape [2,3,4]->[4,6]", {{2, 3, 4}}, [](const Tensor& x) { return x.reshape({4, 6}); },
                            [](const Ref& r) { return same_data(r, {4, 6}); }));
  cases.push_back(view_case("reshape of a transposed view (copies)", {{3, 4}, Values::normal, Layout::transposed},
                            [](const Tensor& x) { return x.reshape({-1}); },
                            [](const Ref& r) { return same_data(r, {12}); }));
  cases.push_back(view_case("view with -1", {{2, 6}}, [](const Tensor& x) { return x.view({3, -1}); },
                            [](const Ref& r) { return same_data(r, {3, 4}); }));
  cases.push_back(view_case("permute [2,3,4] (2,0,1)", {{2, 3, 4}, Values::normal, Layout::strided},
                            [](const Tensor& x) { return x.permute({2, 0, 1}); },
                            [](const Ref& r) {
                              return pick(r, {4, 2, 3}, [](const Shape& i) { return Shape{i[1], i[2], i[0]}; });
                            }));
  cases.push_back(view_case("transpose", {{3, 5}}, [](const Tensor& x) { return x.transpose(0, 1); },
                            [](const Ref& r) { return pick(r, {5, 3}, [](const Shape& i) { return Shape{i[1], i[0]}; }); }));
  cases.push_back(view_case("narrow", {{4, 5}, Values::normal, Layout::transposed},
                            [](const Tensor& x) { return x.narrow(1, 1, 3); },
                            [](const Ref& r) { return pick(r, {4, 3}, [](const Shape& i) { return Shape{i[0], i[1] + 1}; }); }));
  cases.push_back(view_case("slice with step", {{7, 3}}, [](const Tensor& x) { return x.slice(0, 1, 7, 2); },
                            [](const Ref& r) {
                              return pick(r, {3, 3}, [](const Shape& i) { return Shape{1 + 2 * i[0], i[1]}; });
                            }));
  cases.push_back(view_case("select", {{3, 4, 2}}, [](const Tensor& x) { return x.select(1, -1); },
                            [](const Ref& r) { return pick(r, {3, 2}, [](const Shape& i) { return Shape{i[0], 3, i[1]}; }); }));
  cases.push_back(view_case("expand", {{3, 1}}, [](const Tensor& x) { return x.expand({2, 3, 4}); },
                            [](const Ref& r) { return pick(r, {2, 3, 4}, [](const Shape& i) { return Shape{i[1], 0}; }); }));
  cases.push_back(view_case("unsqueeze + squeeze", {{3, 4}}, [](const Tensor& x) { return x.unsqueeze(1).squeeze(1).unsqueeze(-1); },
                            [](const Ref& r) { return same_data(r, {3, 4, 1}); }));
  cases.push_back(view_case("flatten(1)", {{2, 3, 4}, Values::normal, Layout::transposed},
                            [](const Tensor& x) { return x.flatten(1); }, [](const Ref& r) { return same_data(r, {2, 12}); }));
  cases.push_back(view_case("contiguous", {{3, 4}, Values::normal, Layout::strided},
                            [](const Tensor& x) { return x.contiguous(); }, [](const Ref& r) { return r; }));
  cases.push_back(view_case("clone", {{3, 4}, Values::normal, Layout::transposed},
                            [](const Tensor& x) { return mul(x.clone(), 2.0); },
                            [](const Ref& r) {
                              Ref out = r;
                              for (auto& v : out.data) v *= 2;
                              return out;
                            }));

  auto cat_ref = [](const std::vector<Ref>& r, int64_t dim) {
    Shape shape = r[0].shape;
    shape[dim] = 0;
    for (const auto& x : r) shape[dim] += x.shape[dim];
    Ref out(shape);
    int64_t offset = 0;
    for (const auto& x : r) {
      for (const Shape& i : all_indices(x.shape)) {
        Shape j = i;
        j[dim] += offset;
        out.at(j) = x.at(i);
      }
      offset += x.shape[dim];
    }
    return out;
  };
  cases.push_back({"cat dim 0", {{{2, 3}}, {{1, 3}, Values::normal, Layout::strided}, {{3, 3}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) { return cat(x, 0); },
                   [cat_ref](const std::vector<Ref>& r) { return cat_ref(r, 0); }});
  cases.push_back({"cat dim -1", {{{2, 2}, Values::normal, Layout::transposed}, {{2, 3}}},
                   [](const std::vector<Tensor>& x) { return cat(x, -1); },
                   [cat_ref](const std::vector<Ref>& r) { return cat_ref(r, 1); }});
  cases.push_back({"stack dim 1", {{{2, 3}}, {{2, 3}, Values::normal, Layout::strided}},
                   [](const std::vector<Tensor>& x) { return stack(x, 1); },
                   [](const std::vector<Ref>& r) {
                     Ref out({2, 2, 3});
                     for (const Shape& i : all_indices(out.shape)) out.at(i) = r[i[1]].at({i[0], i[2]});
                     return out;
                   }});
  cases.push_back({"split (second part, with remainder)", {{{7, 2}}},
                   [](const std::vector<Tensor>& x) { return mul(split(x[0], 3, 0)[2], 1.0); },
                   [](const std::vector<Ref>& r) { return pick(r[0], {1, 2}, [](const Shape& i) { return Shape{6, i[1]}; }); }});
  cases.push_back({"chunk (parts recombined)", {{{3, 5}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) {
                     auto parts = chunk(x[0], 2, 1);  // sizes 3 and 2
                     return cat({mul(parts[1], 3.0), parts[0]}, 1);
                   },
                   [](const std::vector<Ref>& r) {
                     Ref out({3, 5});
                     for (const Shape& i : all_indices(out.shape))
                       out.at(i) = i[1] < 2 ? 3.0 * r[0].at({i[0], i[1] + 3}) : r[0].at({i[0], i[1] - 2});
                     return out;
                   }});

  cases.push_back({"index_select with repeats", {{{4, 3}, Values::normal, Layout::transposed}, {{5}, Values::index, Layout::contiguous, false, 4}},
                   [](const std::vector<Tensor>& x) { return index_select(x[0], 0, x[1]); },
                   [](const std::vector<Ref>& r) {
                     return pick(r[0], {5, 3}, [&](const Shape& i) { return Shape{static_cast<int64_t>(r[1].data[i[0]]), i[1]}; });
                   }});
  cases.push_back({"index_select dim 1", {{{2, 5, 2}}, {{3}, Values::index, Layout::contiguous, false, 5}},
                   [](const std::vector<Tensor>& x) { return index_select(x[0], 1, x[1]); },
                   [](const std::vector<Ref>& r) {
                     return pick(r[0], {2, 3, 2}, [&](const Shape& i) { return Shape{i[0], static_cast<int64_t>(r[1].data[i[1]]), i[2]}; });
                   }});
  cases.push_back({"gather dim 1", {{{3, 5}, Values::normal, Layout::strided}, {{3, 4}, Values::index, Layout::contiguous, false, 5}},
                   [](const std::vector<Tensor>& x) { return gather(x[0], 1, x[1]); },
                   [](const std::vector<Ref>& r) {
                     return pick(r[0], {3, 4}, [&](const Shape& i) { return Shape{i[0], static_cast<int64_t>(r[1].at(i))}; });
                   }});
  cases.push_back({"gather dim 0", {{{4, 3}}, {{2, 3}, Values::index, Layout::transposed, false, 4}},
                   [](const std::vector<Tensor>& x) { return gather(x[0], 0, x[1]); },
                   [](const std::vector<Ref>& r) {
                     return pick(r[0], {2, 3}, [&](const Shape& i) { return Shape{static_cast<int64_t>(r[1].at(i)), i[1]}; });
                   }});
  cases.push_back({"scatter_add dim 1 (duplicates accumulate)",
                   {{{3, 4}}, {{3, 6}, Values::index, Layout::contiguous, false, 4}, {{3, 6}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) { return scatter_add(x[0], 1, x[1], x[2]); },
                   [](const std::vector<Ref>& r) {
                     Ref out = r[0];
                     for (const Shape& i : all_indices(r[1].shape))
                       out.at({i[0], static_cast<int64_t>(r[1].at(i))}) += r[2].at(i);
                     return out;
                   }});
  cases.back().rounds_terms_before_summing = true;  // the sum is accumulated in the dtype
  for (bool largest : {true, false}) {
    cases.push_back({std::string("topk values k=3 ") + (largest ? "largest" : "smallest"),
                     {{{4, 6}, Values::distinct, Layout::transposed}},
                     [largest](const std::vector<Tensor>& x) { return topk(x[0], 3, -1, largest).first; },
                     [largest](const std::vector<Ref>& r) {
                       Ref out({4, 3});
                       for (int64_t i = 0; i < 4; ++i) {
                         std::vector<double> row(r[0].data.begin() + i * 6, r[0].data.begin() + i * 6 + 6);
                         std::sort(row.begin(), row.end());
                         if (largest) std::reverse(row.begin(), row.end());
                         for (int64_t j = 0; j < 3; ++j) out.at({i, j}) = row[j];
                       }
                       return out;
                     }});
  }
  cases.push_back({"topk indices along dim 0", {{{5, 3}, Values::distinct, Layout::contiguous, false}},
                   [](const std::vector<Tensor>& x) { return topk(x[0], 2, 0).second; },
                   [](const std::vector<Ref>& r) {
                     Ref out({2, 3});
                     for (int64_t c = 0; c < 3; ++c) {
                       std::vector<int64_t> order(5);
                       std::iota(order.begin(), order.end(), 0);
                       std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return r[0].at({a, c}) > r[0].at({b, c}); });
                       out.at({0, c}) = static_cast<double>(order[0]);
                       out.at({1, c}) = static_cast<double>(order[1]);
                     }
                     return out;
                   },
                   false});
  return cases;
}

}  // namespace bam::test
