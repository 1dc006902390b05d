// Tensor semantics: views share storage, strides and contiguity, reshape vs view, dtype
// conversions (bf16/f16 round to nearest even), factories, printing, in-place rules.
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/random.h"
#include "kernels/cpu/parallel.h"
#include "tests/support.h"

namespace bam::test {

TEST_CASE("views share storage and see each other's writes") {
  Tensor base = arange(0, 12, 1, {DType::f32}).reshape({3, 4});
  Tensor row = base.select(0, 1);
  Tensor col = base.select(1, 2);
  Tensor window = base.slice(1, 1, 4, 2);
  CHECK(row.storage() == base.storage());
  CHECK(row.to_vector<float>() == std::vector<float>{4, 5, 6, 7});
  CHECK(col.to_vector<float>() == std::vector<float>{2, 6, 10});
  CHECK(window.to_vector<float>() == std::vector<float>{1, 3, 5, 7, 9, 11});
  row.fill_(-1);
  CHECK(base.to_vector<float>()[4] == -1);
  CHECK(col.to_vector<float>() == std::vector<float>{2, -1, 10});
  base.t().select(0, 3).copy_(from_vector(std::vector<float>{30, 31, 32}, {3}));
  CHECK(base.to_vector<float>()[3] == 30);
  CHECK(base.to_vector<float>()[11] == 32);
}

TEST_CASE("strides, contiguity and reshape versus view") {
  Tensor x = zeros({2, 3, 4});
  CHECK(x.strides() == Shape{12, 4, 1});
  CHECK(x.is_contiguous());
  Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK_FALSE(p.is_contiguous());
  CHECK(p.contiguous().is_contiguous());
  // An empty tensor has nothing out of place, whatever its strides (a fresh [2, 0] has strides
  // {1, 1}); it must not be copied or refused as non-contiguous.
  CHECK(zeros({2, 0}).is_contiguous());
  CHECK(zeros({0, 3, 4}).permute({2, 0, 1}).is_contiguous());
  // Merging dims 1-2 of a transposed tensor is impossible without a copy: view refuses, reshape copies.
  Tensor t = x.transpose(1, 2);
  CHECK_THROWS_WITH_AS(t.view({2, 12}), doctest::Contains("cannot be viewed"), Error);
  Tensor r = t.reshape({2, 12});
  CHECK(r.storage() != x.storage());
  // ...but splitting or merging contiguous runs is a view.
  CHECK(t.view({2, 2, 2, 3}).storage() == x.storage());
  CHECK(x.view({6, 4}).storage() == x.storage());
  CHECK(x.expand({5, 2, 3, 4}).strides() == Shape{0, 12, 4, 1});
  CHECK(x.unsqueeze(0).squeeze(0).shape() == x.shape());
  CHECK(x.flatten().shape() == Shape{24});
  CHECK_THROWS_AS(x.view({5, 5}), Error);
  CHECK_THROWS_AS(x.narrow(1, 2, 2), Error);
  CHECK_THROWS_AS(x.permute({0, 0, 1}), Error);
  CHECK_THROWS_AS(x.expand({2, 5, 4}), Error);
  CHECK_THROWS_WITH_AS(x.size(3), doctest::Contains("out of range"), Error);
}

TEST_CASE("bf16 and f16 conversions round to nearest even") {
  // bf16 keeps the top 16 bits of an f32; 1 + 2^-8 is exactly half way between 1 and 1 + 2^-7.
  CHECK(float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);  // tie, to even (down)
  CHECK(float_to_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);  // tie, to even (up)
  CHECK(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);  // above half
  CHECK(bf16_bits_to_float(0x4049) == 3.140625f);
  CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(bf16_bits_to_float(float_to_bf16_bits(INFINITY)) == INFINITY);
  CHECK(float_to_bf16_bits(3.4e38f) == 0x7f80);  // rounds up to infinity

  CHECK(float_to_f16_bits(1.0f) == 0x3c00);
  CHECK(float_to_f16_bits(65504.0f) == 0x7bff);    // largest finite
  CHECK(float_to_f16_bits(65520.0f) == 0x7c00);    // rounds to infinity
  CHECK(float_to_f16_bits(-2.0f) == 0xc000);
  CHECK(float_to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie, to even
  CHECK(float_to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -24)) == 0x0001);           // smallest subnormal
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);           // half of it: tie to even 0
  CHECK(float_to_f16_bits(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(float_to_f16_bits(std::ldexp(1.0f, -14)) == 0x0400);           // smallest normal
  CHECK(f16_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_bits_to_float(0x3555) == 0.333251953125f);
  CHECK(std::isnan(f16_bits_to_float(float_to_f16_bits(NAN))));

  // Every f16 value survives f16 -> f32 -> f16 exactly (all 65536 bit patterns but NaNs).
  int mismatches = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    float f = f16_bits_to_float(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    if (float_to_f16_bits(f) != bits) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("tensor dtype conversions") {
  Tensor x = from_vector(std::vector<double>{-2.75, -0.5, 0.0, 1.5, 300.7, 1e10}, {6});
  CHECK(x.to(DType::i32).to_vector<int32_t>() == std::vector<int32_t>{-2, 0, 0, 1, 300, 2147483647});
  CHECK(x.to(DType::i64).to_vector<int64_t>() == std::vector<int64_t>{-2, 0, 0, 1, 300, 10000000000});
  CHECK(x.to(DType::u8).to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 1, 255, 255});
  CHECK(x.to(DType::boolean).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0, 1, 1, 1});
  Tensor h = x.to(DType::f16);
  CHECK(h.to_vector<double>()[4] == 300.75);  // nearest f16 to 300.7
  CHECK(std::isinf(h.to_vector<double>()[5]));
  CHECK(x.to(DType::bf16).to_vector<double>()[3] == 1.5);
  // Through every dtype and back keeps small integers exact.
  Tensor small = arange(-3, 4, 1, {DType::f64});
  for (DType t : {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64})
    CHECK(small.to(t).to(DType::f64).to_vector<double>() == small.to_vector<double>());
  // Non-contiguous source.
  Tensor m = arange(0, 6, 1, {DType::f32}).reshape({2, 3}).t();
  CHECK(m.to(DType::i64).to_vector<int64_t>() == std::vector<int64_t>{0, 3, 1, 4, 2, 5});
}

TEST_CASE("factories") {
  CHECK(zeros({2, 2}).to_vector<float>() == std::vector<float>{0, 0, 0, 0});
  CHECK(full({3}, 2.5, {DType::f64}).to_vector<double>() == std::vector<double>{2.5, 2.5, 2.5});
  CHECK(arange(5).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(arange(1.0, 2.0, 0.25, {DType::f32}).to_vector<float>() == std::vector<float>{1, 1.25, 1.5, 1.75});
  CHECK(arange(5, 0, -2).to_vector<int64_t>() == std::vector<int64_t>{5, 3, 1});
  CHECK(scalar_tensor(7.0).item() == 7.0);
  CHECK(scalar_tensor(7.0).dim() == 0);
  CHECK(empty({0, 3}).numel() == 0);
  CHECK_THROWS_AS(empty({-1}), Error);
  CHECK_THROWS_WITH_AS(from_vector(std::vector<float>{1, 2, 3}, {2, 2}), doctest::Contains("do not fill"), Error);
  float buffer[6] = {1, 2, 3, 4, 5, 6};
  Tensor blob = from_blob(buffer, {2, 3}, DType::f32);
  blob.mul_(2.0);
  CHECK(buffer[5] == 12.0f);
  CHECK(ones({2}).requires_grad() == false);
  CHECK(ones({2}, {DType::f32, Device::cpu(), true}).requires_grad());
  CHECK_THROWS_AS(ones({2}, {DType::i64, Device::cpu(), true}), Error);
}

TEST_CASE("printing") {
  Tensor x = from_vector(std::vector<float>{1, -2.5, 3, 4}, {2, 2});
  CHECK(x.str() == "tensor([[ 1.0000, -2.5000],\n        [ 3.0000,  4.0000]], dtype=f32)");
  CHECK(arange(3).str() == "tensor([0, 1, 2], dtype=i64)");
  CHECK(scalar_tensor(0.5).str() == "tensor(0.5000, dtype=f32)");
  CHECK(gt(arange(3), scalar_tensor(0, {DType::i64})).str() == "tensor([false,  true,  true], dtype=bool)");
  std::string big = zeros({100, 100}).str();
  CHECK(big.find("...") != std::string::npos);
  CHECK(big.size() < 1000);
  CHECK(from_vector(std::vector<float>{1e-6f, 2e6f}, {2}).str().find("e") != std::string::npos);
  CHECK(Tensor().str() == "tensor(<undefined>)");
}

TEST_CASE("test messages print C strings as text, not as addresses (tests/doctest_text.h)") {
  auto text = [](const auto& value) { return std::string(doctest::toString(value).c_str()); };
  CHECK(text(dtype_name(DType::bf16)) == "bf16");
  bool eval = std::string(dtype_name(DType::f16)) == "f16";
  CHECK(text(eval ? "eval" : "multi-crop") == "eval");
  CHECK(text(static_cast<const char*>(nullptr)) == "(null)");
}

TEST_CASE("in-place updates are refused on tensors that take part in autograd") {
  Tensor w = ones({3}, {DType::f32, Device::cpu(), true});
  CHECK_THROWS_WITH_AS(w.fill_(0), doctest::Contains("NoGradGuard"), Error);
  {
    NoGradGuard no_grad;
    w.add_(full({3}, 2.0));
    w.mul_(0.5);
  }
  CHECK(w.to_vector<float>() == std::vector<float>{1.5, 1.5, 1.5});
  Tensor a = zeros({2, 3});
  a.add_(from_vector(std::vector<float>{1, 2, 3}, {3}), 2.0);  // broadcast
  CHECK(a.to_vector<float>() == std::vector<float>{2, 4, 6, 2, 4, 6});
}

TEST_CASE("errors name the op and shapes") {
  Tensor a = zeros({2, 3}), b = zeros({4, 3});
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("[2, 3] and [4, 3] cannot be broadcast"), Error);
  CHECK_THROWS_WITH_AS(matmul(a, b), doctest::Contains("inner dimensions differ"), Error);
  CHECK_THROWS_WITH_AS(add(a, zeros({2, 3}, {DType::f64})), doctest::Contains("dtypes differ"), Error);
  CHECK_THROWS_WITH_AS(exp(zeros({2}, {DType::bf16})), doctest::Contains("not supported on the CPU"), Error);
  CHECK_THROWS_WITH_AS(gather(a, 1, from_vector(std::vector<int64_t>{0, 5, 1, 1, 2, 0}, {2, 3})),
                       doctest::Contains("index 5 is out of range"), Error);
  CHECK_THROWS_WITH_AS(index_select(a, 0, from_vector(std::vector<int64_t>{-1}, {1})),
                       doctest::Contains("index -1 is out of range"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(a, zeros({4}), Tensor()), doctest::Contains("expected last dim 3"), Error);
  CHECK_THROWS_AS(topk(a, 4, 1), Error);
  // Two bad indices far apart, on three threads: the error names the first, every time (it named
  // whichever a thread met first).
  const int threads = cpu::num_threads();
  cpu::set_num_threads(3);
  std::vector<int64_t> far(40000, 0);
  far[100] = 1000;
  far[30000] = -5;
  const Tensor column = zeros({40000, 1}), far_index = from_vector(far, {40000, 1});
  for (int round = 0; round < 10; ++round)
    CHECK_THROWS_WITH_AS(gather(column, 1, far_index), doctest::Contains("index 1000 is out of range"), Error);
  cpu::set_num_threads(threads);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3}), from_vector(std::vector<int64_t>{1, 3}, {2})),
                       doctest::Contains("cross_entropy: label 3 (row 1) is outside the 3 classes"), Error);
}

TEST_CASE("scatter_add and index_select's gradient sum bf16/f16 values in f32, rounded once") {
  // 1 + 2^-9 rounds back to 1 in bf16 (and 2048 + 1 to 2048 in f16): added one at a time in the
  // storage type, 256 such terms vanish; summed in f32 they make 1.5 (2176), which both types hold.
  struct Case {
    DType dtype;
    float start, term, expected;
  };
  for (Case c : {Case{DType::bf16, 1.0f, std::ldexp(1.0f, -9), 1.5f}, Case{DType::f16, 2048.0f, 0.5f, 2176.0f}}) {
    CAPTURE(dtype_name(c.dtype));
    std::vector<float> terms(256, c.term);
    Tensor x = full({1}, c.start).to(c.dtype);
    Tensor src = from_vector(terms, {256}).to(c.dtype);
    Tensor index = zeros({256}, {DType::i64});
    Tensor sum = scatter_add(x, 0, index, src);
    CHECK(sum.dtype() == c.dtype);
    CHECK(sum.to(DType::f32).item() == c.expected);

    // index_select's backward adds the gradient of every repeat of row 0 into row 0.
    Tensor rows = full({2, 1}, 0.0f).to(c.dtype).requires_grad_();
    Tensor picked = index_select(rows, 0, zeros({257}, {DType::i64}));
    std::vector<float> grad(257, c.term);
    grad[0] = c.start;
    picked.backward(from_vector(grad, {257, 1}).to(c.dtype));
    REQUIRE(rows.grad().defined());
    CHECK(rows.grad().dtype() == c.dtype);
    CHECK(rows.grad().to(DType::f32).contiguous().data<float>()[0] == c.expected);
  }
}

TEST_CASE("edge shapes: 0-d tensors, sizes past 2^63, -1 in a new dim, huge slice steps are errors or exact") {
  Tensor s = scalar_tensor(3);
  CHECK_THROWS_WITH_AS(s.size(0), doctest::Contains("size: dimension 0 is out of range for a 0-d tensor"), Error);
  CHECK_THROWS_WITH_AS(cat({s, scalar_tensor(2)}), doctest::Contains("cat: dimension 0 is out of range for a 0-d"),
                       Error);
  CHECK_THROWS_WITH_AS(s.narrow(0, 0, 1), doctest::Contains("narrow: dimension 0 is out of range"), Error);
  CHECK(sum(s, {0}).item() == 3);  // as torch: a 0-d tensor's dim 0 (or -1) is its one element
  CHECK(sum(s, {-1}).item() == 3);
  CHECK_THROWS_WITH_AS(sum(s, {1}), doctest::Contains("dimension 1 is out of range for a 0-d tensor"), Error);
  Generator gen(1);
  CHECK_THROWS_WITH_AS(drop_path(s, 0.5, true, &gen), doctest::Contains("drop_path: drops whole samples"), Error);

  CHECK_THROWS_WITH_AS(zeros({int64_t{1} << 62}), doctest::Contains("too large to allocate"), Error);
  CHECK_THROWS_WITH_AS(zeros({int64_t{1} << 40, int64_t{1} << 40}), doctest::Contains("more elements than 2^63"),
                       Error);

  Tensor v = from_vector(std::vector<float>{1, 2, 3}, {3});
  CHECK_THROWS_WITH_AS(v.expand({-1, 3}), doctest::Contains("a new leading dimension needs a size, not -1"), Error);
  CHECK(v.expand({2, -1}).shape() == Shape{2, 3});
  Tensor one = v.slice(0, 1, 3, std::numeric_limits<int64_t>::max());  // one element: no stride overflow
  CHECK(one.to_vector<float>() == std::vector<float>{2});

  // copy_ from its own memory reads the source whole first; writes into an expanded view are refused.
  Tensor square = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {3, 3});
  square.copy_(square.t());
  CHECK(square.to_vector<float>() == std::vector<float>{1, 4, 7, 2, 5, 8, 3, 6, 9});
  Tensor row = zeros({3});
  CHECK_THROWS_WITH_AS(row.expand({2, 3}).copy_(ones({2, 3})),
                       doctest::Contains("whose elements share memory (an expanded view, stride 0 in dim 0)"), Error);

  // topk ranks NaN above every value, as torch: first among the largest, last among the smallest.
  const Tensor with_nan = from_vector(std::vector<float>{1, std::nanf(""), 0}, {3});
  CHECK(topk(with_nan, 1, 0, false).second.to_vector<int64_t>() == std::vector<int64_t>{2});
  CHECK(topk(with_nan, 1, 0, true).second.to_vector<int64_t>() == std::vector<int64_t>{1});
  CHECK(topk(with_nan, 3, 0, false).second.to_vector<int64_t>() == std::vector<int64_t>{2, 0, 1});

  // log_softmax of large values keeps log(2): (x - max) - log(sum), not x - (max + log(sum)).
  const std::vector<float> big = log_softmax(from_vector(std::vector<float>{1e8f, 1e8f}, {1, 2}), 1).to_vector<float>();
  CHECK(big[0] == doctest::Approx(-std::log(2.0)));
  CHECK(big[1] == doctest::Approx(-std::log(2.0)));
}

TEST_CASE("read_scalars: one-element tensors of any floating dtype, read together") {
  Tensor a = from_vector(std::vector<float>{1.5f}, {});
  Tensor b = from_vector(std::vector<double>{-2.25}, {1, 1});
  Tensor c = mul(from_vector(std::vector<float>{3.0f}, {1}).requires_grad_(true), 2.0);  // in a graph
  const std::vector<double> v = read_scalars({a, b, c});
  REQUIRE(v.size() == 3);
  CHECK(v[0] == 1.5);
  CHECK(v[1] == -2.25);
  CHECK(v[2] == 6.0);
  CHECK(read_scalars({}).empty());
  CHECK_THROWS_WITH(read_scalars({a, zeros({2})}), doctest::Contains("one-element tensors"));
  CHECK_THROWS_WITH(read_scalars({Tensor()}), doctest::Contains("undefined"));
}

TEST_CASE("device names: cpu, cuda, cuda:N with up to 4 digits") {
  Device d;
  CHECK((parse_device("cpu", &d) && d == Device::cpu()));
  CHECK((parse_device("cuda", &d) && d == Device::cuda(0)));
  CHECK((parse_device("cuda:9999", &d) && d == Device::cuda(9999)));
  CHECK_FALSE(parse_device("cuda:4294967297", &d));  // wrapped to cuda:1 before the limit
  CHECK_FALSE(parse_device("cuda:", &d));
  CHECK_FALSE(parse_device("cuda:1x", &d));
  CHECK_FALSE(parse_device("gpu", &d));
}

TEST_CASE("CUDA availability is reported, never assumed") {
  bool available = cuda::is_available();
  if (!available) {
    MESSAGE("no CUDA device: " << cuda::unavailable_reason());
    CHECK_FALSE(cuda::unavailable_reason().empty());
    CHECK_THROWS_AS(zeros({2}, {DType::f32, Device::cuda()}), Error);
    CHECK_THROWS_WITH_AS(cuda::select_device(1), doctest::Contains("cuda:1: "), Error);
    CHECK_THROWS_WITH_AS(cuda::device_allocate_uncached(64, "the test's buffer"),
                         doctest::Contains("for the test's buffer"), Error);
  } else {
    Tensor x = arange(0, 6, 1, {DType::f32}).reshape({2, 3});
    CHECK(x.to(Device::cuda()).t().contiguous().to(Device::cpu()).to_vector<float>() ==
          std::vector<float>{0, 3, 1, 4, 2, 5});
  }
}

}  // namespace bam::test
