// Op-table rows for the neural-network ops: softmax, log_softmax, layer_norm, batch_norm (train
// and eval), dropout and drop_path (gradients with a fixed generator), l2_normalize, the
// cross-entropy losses, patchify and bicubic interpolation.
#include <cmath>

#include "engine/random.h"
#include "tests/op_table.h"

namespace bam::test {
namespace {

// Applies f to every 1-D line of x along dim (f maps a vector to a vector of the same length).
Ref along(const Ref& x, int64_t dim, const std::function<std::vector<double>(const std::vector<double>&)>& f) {
  if (dim < 0) dim += x.dim();
  Ref out(x.shape);
  for (const Shape& index : all_indices(x.shape)) {
    if (index[dim] != 0) continue;
    std::vector<double> line;
    Shape i = index;
    for (int64_t k = 0; k < x.shape[dim]; ++k) {
      i[dim] = k;
      line.push_back(x.at(i));
    }
    auto result = f(line);
    for (int64_t k = 0; k < x.shape[dim]; ++k) {
      i[dim] = k;
      out.at(i) = result[k];
    }
  }
  return out;
}

std::vector<double> softmax_line(const std::vector<double>& v) {
  double m = *std::max_element(v.begin(), v.end()), total = 0;
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) total += std::exp(v[i] - m);
  for (size_t i = 0; i < v.size(); ++i) out[i] = std::exp(v[i] - m) / total;
  return out;
}

std::vector<double> log_softmax_line(const std::vector<double>& v) {
  auto s = softmax_line(v);
  for (auto& e : s) e = std::log(e);
  return s;
}

// Batch norm reference over [N, C, L] (or [N, C]) with given per-channel mean/var.
Ref batch_norm_ref(const Ref& x, const std::vector<double>& mean, const std::vector<double>& var, const Ref* w,
                   const Ref* b, double eps) {
  Ref out(x.shape);
  for (const Shape& i : all_indices(x.shape)) {
    int64_t c = i[1];
    double y = (x.at(i) - mean[c]) / std::sqrt(var[c] + eps);
    if (w) y *= w->data[c];
    if (b) y += b->data[c];
    out.at(i) = y;
  }
  return out;
}

void batch_stats(const Ref& x, std::vector<double>* mean, std::vector<double>* var) {
  int64_t C = x.shape[1];
  mean->assign(C, 0);
  var->assign(C, 0);
  std::vector<double> count(C, 0);
  for (const Shape& i : all_indices(x.shape)) {
    (*mean)[i[1]] += x.at(i);
    count[i[1]] += 1;
  }
  for (int64_t c = 0; c < C; ++c) (*mean)[c] /= count[c];
  for (const Shape& i : all_indices(x.shape)) (*var)[i[1]] += std::pow(x.at(i) - (*mean)[i[1]], 2) / count[i[1]];
}

// PyTorch's bicubic kernel W(d) for a = -0.75, written as a function of the distance d.
double cubic_weight(double d) {
  const double a = -0.75;
  d = std::fabs(d);
  if (d <= 1) return (a + 2) * d * d * d - (a + 3) * d * d + 1;
  if (d < 2) return a * d * d * d - 5 * a * d * d + 8 * a * d - 4 * a;
  return 0;
}

Ref bicubic_ref(const Ref& x, int64_t out_h, int64_t out_w) {
  int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  Ref out({B, C, out_h, out_w});
  auto clampi = [](int64_t v, int64_t n) { return std::max<int64_t>(0, std::min(v, n - 1)); };
  for (const Shape& i : all_indices(out.shape)) {
    double sy = (i[2] + 0.5) * H / double(out_h) - 0.5, sx = (i[3] + 0.5) * W / double(out_w) - 0.5;
    int64_t y0 = static_cast<int64_t>(std::floor(sy)), x0 = static_cast<int64_t>(std::floor(sx));
    double acc = 0;
    for (int64_t yy = y0 - 1; yy <= y0 + 2; ++yy)
      for (int64_t xx = x0 - 1; xx <= x0 + 2; ++xx)
        acc += cubic_weight(sy - yy) * cubic_weight(sx - xx) * x.at({i[0], i[1], clampi(yy, H), clampi(xx, W)});
    out.at(i) = acc;
  }
  return out;
}

}  // namespace

std::vector<OpCase> nn_cases() {
  std::vector<OpCase> cases;
  for (int64_t dim : {-1, 0, 1}) {
    cases.push_back({"softmax dim " + std::to_string(dim), {{{3, 4, 5}, Values::normal, Layout::transposed}},
                     [dim](const std::vector<Tensor>& x) { return softmax(x[0], dim); },
                     [dim](const std::vector<Ref>& r) { return along(r[0], dim, softmax_line); }});
    cases.push_back({"log_softmax dim " + std::to_string(dim), {{{3, 4, 5}, Values::normal, Layout::strided}},
                     [dim](const std::vector<Tensor>& x) { return log_softmax(x[0], dim); },
                     [dim](const std::vector<Ref>& r) { return along(r[0], dim, log_softmax_line); }});
  }
  cases.push_back({"softmax of large logits",
                   {{{2, 6}, Values::normal}},
                   [](const std::vector<Tensor>& x) { return softmax(mul(x[0], 300.0), -1); },
                   [](const std::vector<Ref>& r) {
                     Ref scaled = r[0];
                     for (auto& v : scaled.data) v *= 300.0;
                     return along(scaled, -1, softmax_line);
                   }});
  // The input gradient is 300 * y * (g - <g, y>). In a near one-hot row the difference cancels, so
  // the f32 rounding of <g, y> (about eps * |g|, |g| < 4 here) comes out multiplied by 300:
  // atol 300 * 2 * 4 * 2^-24 = 1.4e-4, rather than f32's 1e-5. The forward keeps f32's tolerance.
  cases.back().f32_gradient_tolerance = Tolerance{1.5e-4, tolerance_for(DType::f32).rtol};

  auto ln_ref = [](const std::vector<Ref>& r) {
    return along(r[0], -1, [&](const std::vector<double>& v) {
      double m = 0, s = 0;
      for (double e : v) m += e;
      m /= v.size();
      for (double e : v) s += (e - m) * (e - m);
      s /= v.size();
      std::vector<double> out(v.size());
      for (size_t j = 0; j < v.size(); ++j) {
        out[j] = (v[j] - m) / std::sqrt(s + 1e-6);
        if (r.size() > 1) out[j] = out[j] * r[1].data[j] + r[2].data[j];
      }
      return out;
    });
  };
  cases.push_back({"layer_norm affine", {{{2, 3, 6}, Values::normal, Layout::transposed}, {{6}}, {{6}}},
                   [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-6); }, ln_ref});
  cases.push_back({"layer_norm plain", {{{4, 5}, Values::normal, Layout::strided}},
                   [](const std::vector<Tensor>& x) { return layer_norm(x[0], Tensor(), Tensor(), 1e-6); }, ln_ref});
  // Rows wider than the CPU kernel's eight partial sums, with a remainder.
  cases.push_back({"layer_norm affine, 21 wide",
                   {{{3, 21}, Values::normal}, {{21}}, {{21}}},
                   [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-6); },
                   ln_ref});

  auto bn_train_ref = [](const std::vector<Ref>& r) {
    std::vector<double> mean, var;
    batch_stats(r[0], &mean, &var);
    return batch_norm_ref(r[0], mean, var, r.size() > 1 ? &r[1] : nullptr, r.size() > 2 ? &r[2] : nullptr, 1e-5);
  };
  cases.push_back({"batch_norm train [N,C]", {{{6, 4}, Values::normal, Layout::transposed}, {{4}}, {{4}}},
                   [](const std::vector<Tensor>& x) {
                     Tensor rm = zeros({4}, {x[0].dtype(), x[0].device()}), rv = ones({4}, {x[0].dtype(), x[0].device()});
                     return batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5);
                   },
                   bn_train_ref});
  cases.push_back({"batch_norm train [N,C,L] no affine", {{{3, 2, 4}, Values::normal, Layout::strided}},
                   [](const std::vector<Tensor>& x) { return batch_norm(x[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
                   bn_train_ref});
  cases.push_back({"batch_norm eval", {{{5, 3}}, {{3}}, {{3}}, {{3}, Values::normal, Layout::contiguous, false},
                                       {{3}, Values::positive, Layout::contiguous, false}},
                   [](const std::vector<Tensor>& x) { return batch_norm(x[0], x[1], x[2], x[3], x[4], false, 0.1, 1e-5); },
                   [](const std::vector<Ref>& r) {
                     return batch_norm_ref(r[0], r[3].data, r[4].data, &r[1], &r[2], 1e-5);
                   }});

  // A fixed generator makes the mask the same on every call, so finite differences are valid.
  cases.push_back({"dropout (fixed mask)", {{{4, 6}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) {
                     Generator g(7);
                     return dropout(x[0], 0.3, true, &g);
                   },
                   nullptr});
  cases.push_back({"drop_path (fixed mask)", {{{6, 2, 3}, Values::normal}},
                   [](const std::vector<Tensor>& x) {
                     Generator g(11);
                     return drop_path(x[0], 0.5, true, &g);
                   },
                   nullptr});

  for (int64_t dim : {-1, 0}) {
    cases.push_back({"l2_normalize dim " + std::to_string(dim), {{{3, 5}, Values::normal, Layout::transposed}},
                     [dim](const std::vector<Tensor>& x) { return l2_normalize(x[0], dim); },
                     [dim](const std::vector<Ref>& r) {
                       return along(r[0], dim, [](const std::vector<double>& v) {
                         double n = 0;
                         for (double e : v) n += e * e;
                         n = std::max(std::sqrt(n), 1e-12);
                         std::vector<double> out(v);
                         for (auto& e : out) e /= n;
                         return out;
                       });
                     }});
  }
  cases.push_back({"soft_cross_entropy", {{{4, 5}, Values::normal, Layout::transposed}, {{4, 5}, Values::positive}},
                   [](const std::vector<Tensor>& x) { return soft_cross_entropy(x[0], x[1]); },
                   [](const std::vector<Ref>& r) {
                     Ref ls = along(r[0], -1, log_softmax_line);
                     double total = 0;
                     for (int64_t i = 0; i < r[0].numel(); ++i) total -= r[1].data[i] * ls.data[i];
                     Ref out(Shape{});
                     out.data[0] = total / r[0].shape[0];
                     return out;
                   }});
  cases.push_back({"cross_entropy", {{{5, 4}, Values::normal, Layout::strided}, {{5}, Values::index, Layout::contiguous, false, 4}},
                   [](const std::vector<Tensor>& x) { return cross_entropy(x[0], x[1]); },
                   [](const std::vector<Ref>& r) {
                     Ref ls = along(r[0], -1, log_softmax_line);
                     double total = 0;
                     for (int64_t i = 0; i < 5; ++i) total -= ls.at({i, static_cast<int64_t>(r[1].data[i])});
                     Ref out(Shape{});
                     out.data[0] = total / 5;
                     return out;
                   }});

  cases.push_back({"patchify P=2 [2,3,4,6]", {{{2, 3, 4, 6}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) { return patchify(x[0], 2); },
                   [](const std::vector<Ref>& r) {
                     const Ref& x = r[0];
                     int64_t B = 2, C = 3, H = 4, W = 6, P = 2, Wp = W / P;
                     Ref out({B, (H / P) * Wp, C * P * P});
                     for (const Shape& i : all_indices(x.shape)) {
                       int64_t b = i[0], c = i[1], y = i[2], xx = i[3];
                       out.at({b, (y / P) * Wp + xx / P, c * P * P + (y % P) * P + xx % P}) = x.at(i);
                     }
                     return out;
                   }});
  cases.push_back({"patchify P=3 drops the remainder", {{{1, 2, 7, 8}}},
                   [](const std::vector<Tensor>& x) { return patchify(x[0], 3); },
                   [](const std::vector<Ref>& r) {
                     const Ref& x = r[0];
                     int64_t C = 2, P = 3, Hp = 2, Wp = 2;
                     Ref out({1, Hp * Wp, C * P * P});
                     for (const Shape& i : all_indices(x.shape)) {
                       int64_t c = i[1], y = i[2], xx = i[3];
                       if (y >= Hp * P || xx >= Wp * P) continue;
                       out.at({0, (y / P) * Wp + xx / P, c * P * P + (y % P) * P + xx % P}) = x.at(i);
                     }
                     return out;
                   }});
  cases.push_back({"bicubic upsample 3x4 -> 5x7", {{{1, 2, 3, 4}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) { return interpolate_bicubic(x[0], 5, 7); },
                   [](const std::vector<Ref>& r) { return bicubic_ref(r[0], 5, 7); }});
  cases.push_back({"bicubic downsample 6x6 -> 4x3", {{{2, 1, 6, 6}}},
                   [](const std::vector<Tensor>& x) { return interpolate_bicubic(x[0], 4, 3); },
                   [](const std::vector<Ref>& r) { return bicubic_ref(r[0], 4, 3); }});
  return cases;
}

}  // namespace bam::test
