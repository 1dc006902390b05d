// Op-table rows for matmul (2-D, transposed and strided operands, batched with broadcasting,
// N-d @ 2-D, 1-D forms) and linear. The reference is the textbook triple loop.
#include <cmath>

#include "tests/op_table.h"

namespace bam::test {
namespace {

// Batched matmul with NumPy broadcasting over the batch dims (both inputs at least 2-D).
Ref matmul_ref(const Ref& a, const Ref& b) {
  int64_t M = a.shape[a.dim() - 2], K = a.shape[a.dim() - 1], N = b.shape[b.dim() - 1];
  Shape batch_a(a.shape.begin(), a.shape.end() - 2), batch_b(b.shape.begin(), b.shape.end() - 2);
  size_t nb = std::max(batch_a.size(), batch_b.size());
  Shape batch(nb, 1);
  for (size_t i = 0; i < nb; ++i) {
    int64_t da = i + batch_a.size() >= nb ? batch_a[i + batch_a.size() - nb] : 1;
    int64_t db = i + batch_b.size() >= nb ? batch_b[i + batch_b.size() - nb] : 1;
    batch[i] = std::max(da, db);
  }
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Ref out(out_shape);
  for (const Shape& index : all_indices(out_shape)) {
    Shape ia(a.dim()), ib(b.dim());
    for (int64_t d = 0; d < a.dim() - 2; ++d) {
      int64_t from = static_cast<int64_t>(nb) - (a.dim() - 2) + d;
      ia[d] = a.shape[d] == 1 ? 0 : index[from];
    }
    for (int64_t d = 0; d < b.dim() - 2; ++d) {
      int64_t from = static_cast<int64_t>(nb) - (b.dim() - 2) + d;
      ib[d] = b.shape[d] == 1 ? 0 : index[from];
    }
    double acc = 0;
    for (int64_t k = 0; k < K; ++k) {
      ia[a.dim() - 2] = index[nb];
      ia[a.dim() - 1] = k;
      ib[b.dim() - 2] = k;
      ib[b.dim() - 1] = index[nb + 1];
      acc += a.at(ia) * b.at(ib);
    }
    out.at(index) = acc;
  }
  return out;
}

Ref reshaped(Ref r, Shape shape) {
  r.shape = std::move(shape);
  return r;
}

OpCase matmul_case(const std::string& label, InputSpec a, InputSpec b) {
  return {"matmul " + label, {a, b}, [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
          [](const std::vector<Ref>& r) { return matmul_ref(r[0], r[1]); }};
}

}  // namespace

std::vector<OpCase> linalg_cases() {
  std::vector<OpCase> cases;
  cases.push_back(matmul_case("[5,7]@[7,3]", {{5, 7}}, {{7, 3}}));
  cases.push_back(matmul_case("A^T operand", {{5, 7}, Values::normal, Layout::transposed}, {{7, 3}}));
  cases.push_back(matmul_case("B^T operand", {{5, 7}}, {{7, 3}, Values::normal, Layout::transposed}));
  cases.push_back(matmul_case("both transposed", {{4, 6}, Values::normal, Layout::transposed},
                              {{6, 5}, Values::normal, Layout::transposed}));
  cases.push_back(matmul_case("strided operands", {{3, 4}, Values::normal, Layout::strided},
                              {{4, 2}, Values::normal, Layout::strided}));
  cases.push_back(matmul_case("batched [2,3,4]@[2,4,5]", {{2, 3, 4}}, {{2, 4, 5}, Values::normal, Layout::transposed}));
  cases.push_back(matmul_case("empty inner dim [3,0]@[0,2]", {{3, 0}}, {{0, 2}}));
  cases.push_back(matmul_case("broadcast batch [2,1,3,4]@[3,4,2]", {{2, 1, 3, 4}}, {{3, 4, 2}}));
  cases.push_back(matmul_case("N-d @ 2-d [2,3,4]@[4,5]", {{2, 3, 4}, Values::normal, Layout::transposed}, {{4, 5}}));
  cases.push_back(matmul_case("2-d @ N-d [3,4]@[2,4,2]", {{3, 4}}, {{2, 4, 2}}));
  cases.push_back({"matmul 1-d @ 2-d", {{{4}}, {{4, 3}}},
                   [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
                   [](const std::vector<Ref>& r) { return reshaped(matmul_ref(reshaped(r[0], {1, 4}), r[1]), {3}); }});
  cases.push_back({"matmul 2-d @ 1-d", {{{3, 4}, Values::normal, Layout::transposed}, {{4}}},
                   [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
                   [](const std::vector<Ref>& r) { return reshaped(matmul_ref(r[0], reshaped(r[1], {4, 1})), {3}); }});
  cases.push_back({"matmul 1-d @ 1-d (dot)", {{{6}, Values::normal, Layout::strided}, {{6}}},
                   [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
                   [](const std::vector<Ref>& r) {
                     return reshaped(matmul_ref(reshaped(r[0], {1, 6}), reshaped(r[1], {6, 1})), {});
                   }});

  auto linear_ref = [](const std::vector<Ref>& r) {
    const Ref &x = r[0], &w = r[1];
    int64_t in = w.shape[1], out_features = w.shape[0];
    Shape out_shape = x.shape;
    out_shape.back() = out_features;
    Ref out(out_shape);
    int64_t rows = x.numel() / in;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t o = 0; o < out_features; ++o) {
        double acc = r.size() > 2 ? r[2].data[o] : 0.0;
        for (int64_t k = 0; k < in; ++k) acc += x.data[i * in + k] * w.data[o * in + k];
        out.data[i * out_features + o] = acc;
      }
    return out;
  };
  cases.push_back({"linear with bias", {{{2, 3, 5}, Values::normal, Layout::transposed}, {{4, 5}}, {{4}}},
                   [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); }, linear_ref});
  cases.push_back({"linear without bias", {{{6, 5}}, {{3, 5}, Values::normal, Layout::transposed}},
                   [](const std::vector<Tensor>& x) { return linear(x[0], x[1]); }, linear_ref});
  // gelu_linear = linear(gelu(h), w, b), with the GELU recomputed in backward.
  auto gelu_linear_ref = [linear_ref](const std::vector<Ref>& r) {
    std::vector<Ref> args = r;
    for (double& v : args[0].data) v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    return linear_ref(args);
  };
  cases.push_back({"gelu_linear", {{{2, 3, 5}, Values::normal, Layout::transposed}, {{4, 5}}, {{4}}},
                   [](const std::vector<Tensor>& x) { return gelu_linear(x[0], x[1], x[2]); }, gelu_linear_ref});
  cases.back().rounds_terms_before_summing = true;  // GELU(h) is rounded as the GEMM's operand
  // A bias view at an odd offset is not 16-byte aligned: on CUDA the output then starts as a copy of
  // the bias and the GEMM accumulates on top (beta = 1), instead of cuBLASLt's bias epilogue.
  cases.push_back({"linear, bias at an odd offset", {{{3, 5}}, {{4, 5}}, {{5}}},
                   [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2].slice(0, 1, 5)); },
                   [linear_ref](const std::vector<Ref>& r) {
                     Ref bias({4});
                     for (int64_t o = 0; o < 4; ++o) bias.data[o] = r[2].data[o + 1];
                     return linear_ref({r[0], r[1], bias});
                   }});
  cases.push_back({"linear strided input", {{{4, 3}, Values::normal, Layout::strided}, {{2, 3}}, {{2}, Values::normal, Layout::strided}},
                   [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); }, linear_ref});

  // Attention: q, k, v read from the packed layout by index arithmetic, softmax per row; also a
  // single token (one key: its probability is 1).
  struct AttentionRow {
    int64_t heads, N;
    Layout layout;
  };
  for (AttentionRow row : {AttentionRow{1, 5, Layout::contiguous}, AttentionRow{2, 5, Layout::strided},
                           AttentionRow{2, 1, Layout::contiguous}}) {
    const int64_t heads = row.heads, N = row.N;
    cases.push_back({"attention " + std::to_string(heads) + " heads, " + std::to_string(N) + " tokens",
                     {{{2, N, 18}, Values::normal, row.layout}},
                     [heads](const std::vector<Tensor>& x) { return attention(x[0], heads); },
                     [heads, N](const std::vector<Ref>& r) {
                       const Ref& qkv = r[0];
                       int64_t B = 2, C = 6, D = C / heads;
                       Ref out({B, N, C});
                       for (int64_t b = 0; b < B; ++b)
                         for (int64_t h = 0; h < heads; ++h)
                           for (int64_t i = 0; i < N; ++i) {
                             std::vector<double> w(N);
                             double top = -1e300, total = 0;
                             for (int64_t j = 0; j < N; ++j) {
                               double dot = 0;
                               for (int64_t d = 0; d < D; ++d)
                                 dot += qkv.at({b, i, h * D + d}) * qkv.at({b, j, C + h * D + d});
                               w[j] = dot / std::sqrt(double(D));
                               top = std::max(top, w[j]);
                             }
                             for (auto& e : w) total += (e = std::exp(e - top));
                             for (int64_t d = 0; d < D; ++d) {
                               double acc = 0;
                               for (int64_t j = 0; j < N; ++j) acc += w[j] / total * qkv.at({b, j, 2 * C + h * D + d});
                               out.at({b, i, h * D + d}) = acc;
                             }
                           }
                       return out;
                     }});
  }
  return cases;
}

}  // namespace bam::test
