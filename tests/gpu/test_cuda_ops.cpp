// Every op of the op-test table on the GPU against its CPU twin: the same inputs (rounded to the
// dtype under test, in the same non-contiguous layouts, built on the device), the forward output,
// and the gradient of sum(out * w) for every floating input. The CPU side runs in f64 on the
// rounded values, so the only differences are the GPU's own roundings. New device memory is
// poisoned with NaN bytes (BAM_CUDA_POISON, set by the GPU test main), so an unwritten output
// element fails. Every op has a CUDA kernel: every row must pass in every dtype.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <tuple>
#include <utility>

#include "bam/bam_cross_entropy.h"
#include "bam/bam_loss.h"
#include "bam/sinkhorn.h"
#include "engine/cuda.h"
#include "engine/random.h"
#include "kernels/cuda/gemm.h"
#include "tests/op_table.h"

namespace bam::test {
namespace {

// Backward composes several rounded ops (for example div's -(g/b)*(a/b)); in 16-bit types each
// rounding costs up to half an ulp, so gradients get four times the forward tolerance there.
Tolerance gradient_tolerance(DType dtype, Tolerance forward) {
  if (dtype == DType::bf16 || dtype == DType::f16) return {forward.atol * 4, forward.rtol * 4};
  return forward;
}

// Rows whose composition is ill-conditioned in 16 bits (rounding an intermediate changes the
// answer itself), with the reason. They are compared in f32 only.
const std::map<std::string, std::string>& rows_not_in_16bit() {
  static const std::map<std::string, std::string> rows = {
      {"softmax of large logits",
       "x * 300 rounds to steps of 0.5 in f16 (up to 4 in bf16) before the softmax sees it, which moves the "
       "probabilities themselves; the large-logit stability this row checks does not depend on the dtype"}};
  return rows;
}

// The scale of a broadcast input's gradient (OpCase::broadcasts): the sum over the output elements
// it reaches of |term|, from the CPU f64 gradient of that input expanded to the output's shape. In
// 16 bits the backward rounds every term before the sum, so a sum that cancels keeps their error.
Ref broadcast_gradient_magnitude(const OpCase& c, const std::vector<Tensor>& cpu_inputs, size_t i,
                                 const Tensor& cpu_weights) {
  std::vector<Tensor> inputs;
  for (const Tensor& t : cpu_inputs) inputs.push_back(t.detach());
  Tensor expanded = inputs[i].expand(cpu_weights.shape()).contiguous();
  expanded.requires_grad_(true);
  inputs[i] = expanded;
  c.run(inputs).backward(cpu_weights);
  // The terms must add up to the gradient itself, or the row is not an elementwise broadcast.
  check_close(sum_to_shape(expanded.grad(), cpu_inputs[i].shape()), to_ref(cpu_inputs[i].grad()),
              tolerance_for(DType::f64), c.name + ": broadcast gradient terms");
  return to_ref(sum_to_shape(abs(expanded.grad()), cpu_inputs[i].shape()));
}

// Runs one row in `dtype` on both devices and compares forward outputs and input gradients.
void run_row(const OpCase& c, DType dtype, InputMaker& maker) {
  std::vector<std::vector<double>> values;
  for (const InputSpec& spec : c.inputs) values.push_back(maker.values(spec));
  std::vector<Tensor> cpu_inputs, gpu_inputs;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    // Round through the dtype on the CPU first, so both sides start from identical values.
    Tensor rounded = maker.make(c.inputs[i], values[i], dtype);
    std::vector<double> exact = rounded.to_vector<double>();
    Tensor cpu = maker.make(c.inputs[i], exact, DType::f64);
    Tensor gpu = maker.make(c.inputs[i], exact, dtype, Device::cuda());
    bool wants_grad = c.gradient && c.inputs[i].grad && is_floating(cpu.dtype());
    if (wants_grad) {
      cpu.requires_grad_(true);
      gpu.requires_grad_(true);
    }
    cpu_inputs.push_back(cpu);
    gpu_inputs.push_back(gpu);
  }
  Tensor gpu_out = c.run(gpu_inputs);
  Tensor cpu_out = c.run(cpu_inputs);
  std::string what = c.name + " on CUDA in " + dtype_name(dtype);
  REQUIRE_MESSAGE(gpu_out.device().is_cuda(), what << ": the output is on " << gpu_out.device().str());
  Tolerance tol = dtype == DType::f32 ? c.f32_tolerance : tolerance_for(dtype);
  if (!is_floating(gpu_out.dtype())) tol = tolerance_for(gpu_out.dtype());
  Ref forward_magnitude;
  const bool sixteen_bit = dtype != DType::f32;
  bool rounded_terms = sixteen_bit && c.rounds_terms_before_summing && c.reference;
  if (rounded_terms) {
    std::vector<Ref> magnitudes;
    for (const Tensor& t : cpu_inputs) {
      magnitudes.push_back(to_ref(t));
      for (double& v : magnitudes.back().data) v = std::fabs(v);
    }
    forward_magnitude = c.reference(magnitudes);
  }
  check_close(gpu_out, to_ref(cpu_out), tol, what + " forward", rounded_terms ? &forward_magnitude : nullptr);

  if (!gpu_out.requires_grad() || !is_floating(gpu_out.dtype())) return;
  std::vector<double> w = maker.values({gpu_out.shape()});
  Tensor w_rounded = from_vector(w, gpu_out.shape(), {DType::f64}).to(dtype);
  std::vector<double> w_exact = w_rounded.to_vector<double>();
  Tensor cpu_weights = from_vector(w_exact, cpu_out.shape(), {DType::f64});
  gpu_out.backward(from_vector(w_exact, gpu_out.shape(), {DType::f64}).to(dtype).to(Device::cuda()));
  cpu_out.backward(cpu_weights);
  for (size_t i = 0; i < gpu_inputs.size(); ++i) {
    if (!gpu_inputs[i].requires_grad()) continue;
    Tensor g = gpu_inputs[i].grad();
    REQUIRE_MESSAGE(g.defined(), what << ": no gradient for input " << i);
    Ref magnitude;
    bool broadcast = sixteen_bit && c.broadcasts && gpu_inputs[i].numel() < gpu_out.numel();
    if (broadcast) magnitude = broadcast_gradient_magnitude(c, cpu_inputs, i, cpu_weights);
    Tolerance grad_tol =
        !sixteen_bit && c.f32_gradient_tolerance ? *c.f32_gradient_tolerance : gradient_tolerance(dtype, tol);
    check_close(g, to_ref(cpu_inputs[i].grad()), grad_tol, what + " gradient of input " + std::to_string(i),
                broadcast ? &magnitude : nullptr);
  }
}

}  // namespace

TEST_CASE("CUDA ops match their CPU twins: op table, forward and gradients, f32/bf16/f16") {
  InputMaker maker(test_seed("cuda op table"));
  std::vector<OpCase> cases = all_op_cases();
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (const OpCase& c : cases) {
      CAPTURE(c.name);
      if (auto skip = rows_not_in_16bit().find(c.name); dtype != DType::f32 && skip != rows_not_in_16bit().end()) {
        MESSAGE(c.name << ": not compared in " << dtype_name(dtype) << ": " << skip->second);
        continue;
      }
      // A row that throws (a CUDA error, a missing path) is reported and the table goes on, so one
      // run on a lent GPU lists every failing row; a sticky CUDA error stops the table.
      try {
        run_row(c, dtype, maker);
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " on CUDA in " << dtype_name(dtype) << " threw: " << e.what());
        if (!cuda::device_is_usable()) throw;
      }
    }
    MESSAGE(std::string(dtype_name(dtype)) << ": " << cases.size() << " op-table rows run on CUDA");
  }
}

TEST_CASE("CUDA elementwise and reductions: large, odd-sized inputs exercise the grid-stride loops") {
  InputMaker maker(test_seed("cuda large elementwise"));
  for (DType dtype : {DType::f32, DType::bf16}) {
    InputSpec spec{{1031, 517}};
    std::vector<double> v = maker.values(spec);
    Tensor rounded = maker.make(spec, v, dtype);
    std::vector<double> exact = rounded.to_vector<double>();
    Tensor cpu = maker.make(spec, exact, DType::f64);
    Tensor gpu = maker.make(spec, exact, dtype, Device::cuda());
    Tolerance tol = tolerance_for(dtype);
    std::string what = std::string("1031x517 ") + dtype_name(dtype);
    check_close(gelu(gpu), to_ref(gelu(cpu)), tol, what + " gelu");
    check_close(add(gpu, gpu.slice(0, 0, 1)), to_ref(add(cpu, cpu.slice(0, 0, 1))), tol, what + " row broadcast");
    // Row sums of 517 and column sums of 1031 terms: the accumulation is in double on both sides.
    check_close(sum(gpu, {1}), to_ref(sum(cpu, {1})), tol, what + " row sums");
    check_close(sum(gpu, {0}), to_ref(sum(cpu, {0})), tol, what + " column sums");
    // 40 rows are one chunk: the column kernel writes the sums itself, with no second pass.
    check_close(sum(gpu.slice(0, 0, 40), {0}), to_ref(sum(cpu.slice(0, 0, 40), {0})), tol,
                what + " 40-row column sums");
    check_close(argmax(gpu, 1), to_ref(argmax(cpu, 1)), tolerance_for(DType::i64), what + " argmax");
  }
}

// What the op table's small shapes and float dtypes leave out: rows wide enough for a multi-warp
// block (softmax, log_softmax, l2_normalize with an all-zero row), topk over wide rows with ties
// and NaN, out-of-range indices, integer and bool words in where / index_select / compare, a
// non-dense conversion, TF32 GEMMs, and BatchNorm's running statistics.
TEST_CASE("CUDA paths the op table does not reach: wide rows, ties, index errors, integer words, TF32, batched 16-bit GEMMs, BatchNorm") {
  InputMaker maker(test_seed("cuda op table gaps"));
  const Shape wide{1031, 517};
  // f on both devices from the same values (rounded to dtype); the output and, through
  // sum(out * w), the input's gradient.
  auto compare = [&](const std::string& what, DType dtype, std::vector<double> exact, auto&& f) {
    CAPTURE(what);
    exact = from_vector(exact, wide, {DType::f64}).to(dtype).to_vector<double>();
    Tensor c = from_vector(exact, wide, {DType::f64}), g = from_vector(exact, wide, {DType::f64}).to(dtype).to(Device::cuda());
    c.requires_grad_(true);
    g.requires_grad_(true);
    Tensor co = f(c), go = f(g);
    const Tolerance tol = tolerance_for(dtype);
    check_close(go, to_ref(co), tol, what + " forward");
    std::vector<double> w = from_vector(maker.values({co.shape()}), co.shape(), {DType::f64}).to(dtype).to_vector<double>();
    co.backward(from_vector(w, co.shape(), {DType::f64}));
    go.backward(from_vector(w, co.shape(), {DType::f64}).to(dtype).to(Device::cuda()));
    check_close(g.grad(), to_ref(c.grad()), gradient_tolerance(dtype, tol), what + " gradient");
  };
  for (DType dtype : {DType::f32, DType::bf16}) {
    const std::string d = dtype_name(dtype);
    std::vector<double> v = maker.values({wide});
    compare("softmax 1031x517 " + d, dtype, v, [](const Tensor& x) { return softmax(x, 1); });
    compare("log_softmax 1031x517 " + d, dtype, v, [](const Tensor& x) { return log_softmax(x, 1); });
    std::fill(v.begin() + 3 * 517, v.begin() + 4 * 517, 0.0);  // row 3: norm 0 <= eps
    compare("l2_normalize 1031x517 " + d, dtype, v, [](const Tensor& x) { return l2_normalize(x, 1); });
  }
  {
    // Quarter steps make many ties, broken by the lower index; NaN ranks above every value (the
    // CPU's order: first among the largest, last among the smallest).
    std::vector<double> v = maker.values({wide});
    for (double& x : v) x = std::round(x * 4) / 4;
    v[5 * 517 + 100] = std::nan("");
    v[6 * 517 + 7] = v[6 * 517 + 300] = std::nan("");
    for (DType dtype : {DType::f32, DType::bf16}) {
      // The CPU reference runs in f64 (its topk takes f32/f64): quarter steps and NaN are exact in bf16.
      Tensor c = from_vector(v, wide, {DType::f64}), g = c.to(dtype).to(Device::cuda());
      for (bool largest : {true, false}) {
        auto [cv, ci] = topk(c, 20, 1, largest);
        auto [gv, gi] = topk(g, 20, 1, largest);
        const std::string what = std::string("topk 20 of 517 ") + dtype_name(dtype) + (largest ? " largest" : " smallest");
        check_close(gv, to_ref(cv), {0.0, 0.0}, what + " values");
        check_close(gi, to_ref(ci), {0.0, 0.0}, what + " indices");
      }
    }
  }
  {
    // An out-of-range index is an error that names it, thrown at the host's next wait for the
    // device (the op queues without one); the kernels skip it rather than fault.
    Tensor x = ones({4, 3}, {DType::f32, Device::cuda()});
    Tensor bad_rows = from_vector(std::vector<int64_t>{0, 4}, {2}).to(Device::cuda());
    Tensor bad = from_vector(std::vector<int64_t>{0, 1, 2, 3, -1, 0}, {2, 3}).to(Device::cuda());
    Tensor good = from_vector(std::vector<int64_t>{0, 1, 2, 3, 3, 0}, {2, 3}).to(Device::cuda());
    Tensor src = ones({2, 3}, {DType::f32, Device::cuda()});
    CHECK_THROWS_WITH(index_select(x, 0, bad_rows).to(Device::cpu()),
                      doctest::Contains("index_select: index 4 is out of range for dim 0 of size 4"));
    CHECK_THROWS_WITH(gather(x, 0, bad).to(Device::cpu()),
                      doctest::Contains("gather: index -1 is out of range for dim 0 of size 4"));
    CHECK_THROWS_WITH((scatter_add(x, 0, bad, src), cuda::synchronize()),
                      doctest::Contains("scatter_add: index -1 is out of range for dim 0 of size 4"));
    // index_select's backward (index_add, with the same error slot mechanism) with valid indices.
    Tensor leaf = x.clone().requires_grad_(true);
    Tensor picked = index_select(leaf, 0, from_vector(std::vector<int64_t>{3, 0, 3}, {3}).to(Device::cuda()));
    sum(picked).backward();
    CHECK(leaf.grad().to_vector<float>() == std::vector<float>{1, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2, 2});

    // bf16 sums are kept in f32 and rounded once, as on the CPU (test_tensor.cpp): 256 terms of
    // 2^-9 added to 1 make 1.5, where atomics in bf16 round every one of them away.
    Tensor one = full({1}, 1.0, {DType::bf16, Device::cuda()});
    Tensor terms = full({256}, std::ldexp(1.0, -9), {DType::bf16, Device::cuda()});
    Tensor same_slot = zeros({256}, {DType::i64, Device::cuda()});
    CHECK(scatter_add(one, 0, same_slot, terms).to(DType::f32).item() == 1.5);

    // No op waits of its own, and an error is thrown once, by the wait that covers its launch.
    const int64_t waits = cuda::host_waits();
    Tensor queued = gather(x, 0, bad);
    CHECK(cuda::host_waits() == waits);
    CHECK_THROWS_WITH(cuda::synchronize(), doctest::Contains("reported at the host's next wait"));
    CHECK_NOTHROW(cuda::synchronize());
    // More launches than the slot ring holds (1,024) between two waits: one extra wait frees the
    // ring, and a bad index after the ring wrapped is still found.
    const int64_t waits_before_many = cuda::host_waits();
    for (int i = 0; i < 1100; ++i) (void)gather(x, 0, good);
    CHECK(cuda::host_waits() - waits_before_many == 1);
    (void)gather(x, 0, bad);
    CHECK_THROWS_WITH(cuda::synchronize(), doctest::Contains("gather: index -1"));
    CHECK(gather(x, 0, good).to_vector<float>() == std::vector<float>(6, 1.0f));
    CHECK(sum(x).item() == 12.0);  // the device still works
  }
  {
    // 8-byte (i64) and 1-byte (bool) words in where and index_select; i32 and u8 comparisons.
    std::vector<int64_t> a(300), b(300);
    for (int64_t i = 0; i < 300; ++i) a[i] = (i * 7919) % 251, b[i] = (i * 104729) % 241;
    Tensor ca = from_vector(a, {300}), cb = from_vector(b, {300});
    Tensor cond = lt(ca, cb), ga = ca.to(Device::cuda()), gb = cb.to(Device::cuda()), gcond = cond.to(Device::cuda());
    const Tolerance exact{0.0, 0.0};
    check_close(where(gcond, ga, gb), to_ref(where(cond, ca, cb)), exact, "where on i64");
    Tensor cflag = gt(ca, 100.0), gflag = cflag.to(Device::cuda());
    check_close(where(gcond, gflag, logical_not(gflag)), to_ref(where(cond, cflag, logical_not(cflag))), exact,
                "where on bool");
    Tensor rows = from_vector(std::vector<int64_t>{299, 0, 17, 17, 150}, {5});
    check_close(index_select(ga, 0, rows.to(Device::cuda())), to_ref(index_select(ca, 0, rows)), exact,
                "index_select on i64");
    check_close(index_select(gflag, 0, rows.to(Device::cuda())), to_ref(index_select(cflag, 0, rows)), exact,
                "index_select on bool");
    for (DType word : {DType::i32, DType::u8}) {
      Tensor x = ca.to(word), y = cb.to(word);
      Tensor gx = x.to(Device::cuda()), gy = y.to(Device::cuda());
      check_close(lt(gx, gy), to_ref(lt(x, y)), exact, std::string("lt on ") + dtype_name(word));
      check_close(eq(gx, gy), to_ref(eq(x, y)), exact, std::string("eq on ") + dtype_name(word));
    }
  }
  {
    // Integer sources convert as the CPU's static_cast: modulo the target's range, and to f32 rounded
    // once (they were clamped, and rounded through double). 2^60 + 2^36 + 1 rounds up to
    // 2^60 + 2^37 in one step, down to 2^60 in two.
    const std::vector<int64_t> v = {-1, 256, 4294967301LL, (int64_t{1} << 60) + (int64_t{1} << 36) + 1, 300, -129};
    for (DType from : {DType::i64, DType::i32}) {
      Tensor c = from_vector(v, {6}).to(from), g = c.to(Device::cuda());
      for (DType to : {DType::u8, DType::i32, DType::i64, DType::f32, DType::f64, DType::bf16, DType::boolean}) {
        CAPTURE(dtype_name(from));
        CAPTURE(dtype_name(to));
        CHECK(g.to(to).to(Device::cpu()).to(DType::f64).to_vector<double>() ==
              c.to(to).to(DType::f64).to_vector<double>());
      }
    }
    // A NaN in a row makes its norm NaN: the row normalises to NaN, as on the CPU (max() took eps
    // for the norm, and the other entries came out near 1e12).
    Tensor row = from_vector(std::vector<float>{std::nanf(""), 1, 2, 3, 4, 5}, {2, 3});
    const std::vector<float> got = l2_normalize(row.to(Device::cuda()), 1).to(Device::cpu()).to_vector<float>();
    const std::vector<float> want = l2_normalize(row, 1).to_vector<float>();
    for (size_t i = 0; i < 3; ++i) CHECK(std::isnan(got[i]));
    for (size_t i = 3; i < 6; ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-6));
  }
  {
    // A transposed (non-dense) view converted: the generic strided conversion.
    Tensor x = randn({37, 29});
    Tensor gx = x.to(Device::cuda());
    check_close(gx.t().to(DType::bf16), to_ref(x.t().to(DType::bf16)), {0.0, 0.0}, "transposed f32 -> bf16");
    check_close(gx.t().to(DType::f64), to_ref(x.t().to(DType::f64)), {0.0, 0.0}, "transposed f32 -> f64");
  }
  {
    // TF32 (opt-in for f32 GEMMs): 10 mantissa bits per operand, f32 sums over K = 300 products of
    // unit size, so errors of order 1e-2; and it must differ from the f32 GEMM somewhere, or the
    // opt-in did nothing.
    Generator gen(21);
    Tensor a = randn({64, 300}, {}, &gen), b = randn({300, 48}, {}, &gen);
    Tensor ga = a.to(Device::cuda()), gb = b.to(Device::cuda());
    Tensor f32 = matmul(ga, gb);
    cuda_kernels::gemm_allow_tf32(true);
    Tensor tf32 = matmul(ga, gb);
    cuda_kernels::gemm_allow_tf32(false);
    Ref expected = to_ref(matmul(a.to(DType::f64), b.to(DType::f64)));
    // TF32 keeps 10 mantissa bits: each product of the 300-term sums carries about 2^-10 of
    // relative error, which sums to a spread of ~0.02 at these magnitudes (|entries| ~17), and to
    // 0.05 at the tail of 3072 entries when the inputs are truncated rather than rounded. 0.1
    // leaves room for either; a wrong GEMM is off by the entries' own size.
    check_close(tf32, expected, {1e-1, 2e-3}, "TF32 matmul");
    check_close(f32, expected, {1e-3, 1e-4}, "f32 matmul");
    const double differs = max(abs(sub(tf32, f32))).item();
    MESSAGE("TF32 vs f32 GEMM, max |difference| = " << differs);
    CHECK(differs > 0.0);
  }
  // Batched 16-bit GEMMs whose matrices are not all aligned like the first: a [3, 197, 197] or
  // [3, 37, 37] matrix is an odd number of elements, so every other one starts 2 bytes off the
  // alignment of the base pointer. cuBLASLt is told the alignment all of them keep.
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (auto [a_shape, b_shape] : {std::pair<Shape, Shape>{{3, 197, 64}, {3, 64, 197}},
                                    std::pair<Shape, Shape>{{3, 37, 37}, {3, 37, 64}}}) {
      const std::string what = std::string("batched matmul ") + dtype_name(dtype) + " " + shape_str(a_shape) + " @ " +
                               shape_str(b_shape);
      CAPTURE(what);
      Generator gen(23);
      Tensor a = randn(a_shape, {}, &gen).to(dtype), b = randn(b_shape, {}, &gen).to(dtype);
      Ref expected = to_ref(matmul(a.to(DType::f64), b.to(DType::f64)));
      check_close(matmul(a.to(Device::cuda()), b.to(Device::cuda())), expected, tolerance_for(dtype), what);
    }
  }
  // BatchNorm in training updates its running statistics in place: mean with the batch mean,
  // variance with the unbiased batch variance (momentum 0.1).
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (const Shape& shape : {Shape{6, 4}, Shape{3, 2, 4}}) {
      const std::string what = std::string("batch_norm running stats ") + dtype_name(dtype) + " " + shape_str(shape);
      CAPTURE(what);
      const int64_t C = shape[1];
      InputSpec spec{shape};
      std::vector<double> exact = maker.make(spec, maker.values(spec), dtype).to_vector<double>();
      Tensor cm = zeros({C}, {DType::f64}), cv = ones({C}, {DType::f64});
      Tensor gm = zeros({C}, {dtype, Device::cuda()}), gv = ones({C}, {dtype, Device::cuda()});
      Tensor cy = batch_norm(from_vector(exact, shape, {DType::f64}), Tensor(), Tensor(), cm, cv, true, 0.1, 1e-5);
      Tensor gy = batch_norm(maker.make(spec, exact, dtype, Device::cuda()), Tensor(), Tensor(), gm, gv, true, 0.1, 1e-5);
      check_close(gy, to_ref(cy), tolerance_for(dtype), what + " output");
      check_close(gm, to_ref(cm), tolerance_for(dtype), what + " running mean");
      check_close(gv, to_ref(cv), tolerance_for(dtype), what + " running variance");
    }
  }
}

// The dense elementwise kernels move 16-byte packs and take the leftover elements one at a time;
// views at an odd offset are misaligned and take the one-element path. Sizes around the pack
// widths (8 16-bit, 4 f32 elements) and a large odd size, at offsets 0 and 1, cover every path.
TEST_CASE("CUDA autocast boundaries: dense casts, residual_add, gelu and LayerNorm into 16 bits match the CPU") {
  InputMaker maker(test_seed("cuda autocast boundaries"));
  auto same = [](const Tensor& a, const Tensor& b) {  // exact equality of values (no NaN in these inputs)
    return a.to_vector<float>() == b.to_vector<float>();
  };
  for (int64_t n : {1, 7, 8, 9, 4099, 1000003}) {
    for (int64_t offset : {0, 1}) {
      std::string where = "n=" + std::to_string(n) + " offset=" + std::to_string(offset);
      CAPTURE(where);
      Tensor host = maker.make({{n + offset}}, maker.values({{n + offset}}), DType::f32);
      Tensor cpu32 = host.narrow(0, offset, n), gpu32 = host.to(Device::cuda()).narrow(0, offset, n);
      for (DType half : {DType::bf16, DType::f16}) {
        CAPTURE(dtype_name(half));
        // f32 -> 16 bits and back, each side misaligned in turn: exactly the CPU conversion.
        Tensor cpu16 = cpu32.to(half), gpu16 = gpu32.to(half);
        CHECK(same(gpu16, cpu16));
        Tensor host16 = host.to(half);
        Tensor cpu16_view = host16.narrow(0, offset, n), gpu16_view = host16.to(Device::cuda()).narrow(0, offset, n);
        CHECK(same(gpu16_view.to(DType::f32), cpu16_view.to(DType::f32)));
        // residual_add: one f32 addition of the same values on both sides, so exact; the branch's
        // gradient is the upstream gradient rounded to its dtype.
        Tensor gs = gpu32.detach().requires_grad_(true), gb = gpu16_view.detach().requires_grad_(true);
        Tensor cs = cpu32.detach().requires_grad_(true), cb = cpu16_view.detach().requires_grad_(true);
        Tensor gout = residual_add(gs, gb), cout = residual_add(cs, cb);
        REQUIRE(gout.dtype() == DType::f32);
        CHECK(same(gout, cout));
        Tensor upstream = maker.make({{n}}, maker.values({{n}}), DType::f32);
        gout.backward(upstream.to(Device::cuda()));
        cout.backward(upstream);
        CHECK(same(gs.grad(), cs.grad()));
        REQUIRE(gb.grad().dtype() == half);
        CHECK(same(gb.grad(), cb.grad()));
      }
      // gelu forward and backward on a (possibly misaligned) bf16 view, against f64 on the CPU.
      Tensor x16 = host.to(DType::bf16);
      std::vector<double> exact = x16.narrow(0, offset, n).to_vector<double>();
      Tensor gx = x16.to(Device::cuda()).narrow(0, offset, n).detach().requires_grad_(true);
      Tensor cx = from_vector(exact, {n}, {DType::f64}).requires_grad_(true);
      Tensor gy = gelu(gx), cy = gelu(cx);
      check_close(gy, to_ref(cy), tolerance_for(DType::bf16), where + " gelu bf16");
      std::vector<double> w = maker.values({{n}});
      Tensor w16 = from_vector(w, {n}, {DType::f64}).to(DType::bf16);
      gy.backward(w16.to(Device::cuda()));
      cy.backward(w16.to(DType::f64));
      check_close(gx.grad(), to_ref(cx.grad()), gradient_tolerance(DType::bf16, tolerance_for(DType::bf16)),
                  where + " gelu bf16 gradient");
    }
  }
  // LayerNorm over 384 channels (ViT-S), f32 in and bf16/f16 out, against the CPU's layer_norm then
  // cast; its gradients come back in f32 from a 16-bit upstream gradient.
  for (DType half : {DType::bf16, DType::f16}) {
    CAPTURE(dtype_name(half));
    InputSpec xs{{3, 37, 384}, Values::normal, Layout::contiguous}, ps{{384}};
    std::vector<double> xv = maker.values(xs), wv = maker.values(ps), bv = maker.values(ps);
    auto both = [&](const InputSpec& spec, const std::vector<double>& v) {
      Tensor c = maker.make(spec, v, DType::f32);
      return std::pair{c.detach().requires_grad_(true), c.to(Device::cuda()).detach().requires_grad_(true)};
    };
    auto [cx, gx] = both(xs, xv);
    auto [cw, gw] = both(ps, wv);
    auto [cb, gb] = both(ps, bv);
    Tensor gy = layer_norm(gx, gw, gb, 1e-6, half), cy = layer_norm(cx, cw, cb, 1e-6, half);
    REQUIRE(gy.dtype() == half);
    check_close(gy, to_ref(cy), tolerance_for(half), "layer_norm f32 -> 16 bits forward");
    Tensor upstream = maker.make(xs, maker.values(xs), DType::f32).to(half);
    gy.backward(upstream.to(Device::cuda()));
    cy.backward(upstream);
    for (auto [g, c, name] : {std::tuple{gx, cx, "x"}, {gw, cw, "weight"}, {gb, cb, "bias"}}) {
      REQUIRE(g.grad().dtype() == DType::f32);
      check_close(g.grad(), to_ref(c.grad()), tolerance_for(DType::f32), std::string("layer_norm gradient of ") + name);
    }
  }
}

// LayerNorm backward at the sizes that pick its paths: far more rows than resident blocks (the one
// pass: each block walks several rows, and ~1,800 partial rows are added at the end), eight
// columns per thread (1536), a row too wide for the one pass (2500: dx, then chunked column
// sums), fewer rows than blocks, no rows at all (d_weight and d_bias are then zero), and an input
// that needs no gradient (the one pass then writes d_weight and d_bias alone).
TEST_CASE("CUDA LayerNorm backward matches the CPU: one pass over many rows, wide rows, no rows") {
  InputMaker maker(test_seed("cuda layer norm backward"));
  struct Case {
    int64_t rows, cols;
    DType dtype, out_dtype;
    bool x_grad = true;  // false: the one pass writes no dx
    bool weight = true;  // false: a bias alone (the one pass without a weight)
    bool two_pass = false;  // BAM_LAYER_NORM_BACKWARD=two_pass: the two kernels at a one-pass width
  };
  const Case cases[] = {{20000, 384, DType::f32, DType::f32},
                        {20000, 384, DType::f32, DType::bf16},
                        {20000, 384, DType::f32, DType::bf16, false},
                        {20000, 384, DType::f32, DType::f32, true, false},
                        {20000, 384, DType::f32, DType::bf16, true, true, true},
                        {3000, 1536, DType::f32, DType::f32},
                        {3000, 1536, DType::bf16, DType::bf16},
                        {1500, 2500, DType::f32, DType::f32},
                        {5, 384, DType::f64, DType::f64},
                        {0, 64, DType::f32, DType::f32}};
  for (const Case& c : cases) {
    CAPTURE(c.x_grad);
    CAPTURE(c.weight);
    CAPTURE(c.two_pass);
    if (c.two_pass)
      setenv("BAM_LAYER_NORM_BACKWARD", "two_pass", 1);
    else
      unsetenv("BAM_LAYER_NORM_BACKWARD");
    CAPTURE(c.rows);
    CAPTURE(c.cols);
    CAPTURE(dtype_name(c.dtype));
    CAPTURE(dtype_name(c.out_dtype));
    // Both sides start from the same values, rounded to the GPU's dtype; the CPU runs in f64.
    auto both = [&](const InputSpec& spec) {
      std::vector<double> exact = maker.make(spec, maker.values(spec), c.dtype).to_vector<double>();
      Tensor cpu = maker.make(spec, exact, DType::f64), gpu = maker.make(spec, exact, c.dtype, Device::cuda());
      return std::pair{cpu, gpu};
    };
    InputSpec xs{{c.rows, c.cols}, Values::normal, Layout::contiguous}, ps{{c.cols}};
    auto [cx, gx] = both(xs);
    cx.requires_grad_(c.x_grad);
    gx.requires_grad_(c.x_grad);
    auto [cw, gw] = both(ps);
    auto [cb, gb] = both(ps);
    for (Tensor* t : {&cw, &gw, &cb, &gb}) t->requires_grad_(true);
    if (!c.weight) cw = gw = Tensor();
    Tensor gy = layer_norm(gx, gw, gb, 1e-6, c.out_dtype), cy = layer_norm(cx, cw, cb, 1e-6);
    REQUIRE(gy.dtype() == c.out_dtype);
    check_close(gy, to_ref(cy), tolerance_for(c.out_dtype), "layer_norm forward");
    std::vector<double> upstream = maker.make(xs, maker.values(xs), c.out_dtype).to_vector<double>();
    gy.backward(maker.make(xs, upstream, c.out_dtype, Device::cuda()));
    cy.backward(maker.make(xs, upstream, DType::f64));
    if (c.x_grad)
      check_close(gx.grad(), to_ref(cx.grad()), gradient_tolerance(c.dtype, tolerance_for(c.dtype)),
                  "layer_norm gradient of x");
    else
      CHECK_FALSE(gx.grad().defined());
    // d_weight and d_bias add `rows` terms of unit size: a row dropped or counted twice moves every
    // column by about 1, while f32 rounding over 20,000 terms stays near 1e-4.
    Tolerance sums = gradient_tolerance(c.dtype, tolerance_for(c.dtype));
    sums.atol *= std::max<double>(1.0, double(c.rows) / 100.0);
    if (c.weight) check_close(gw.grad(), to_ref(cw.grad()), sums, "layer_norm gradient of weight");
    check_close(gb.grad(), to_ref(cb.grad()), sums, "layer_norm gradient of bias");
    if (c.rows == 0)
      for (const Tensor& g : {gw.grad(), gb.grad()})
        for (double v : g.to_vector<double>()) CHECK(v == 0.0);
  }
  unsetenv("BAM_LAYER_NORM_BACKWARD");
}

TEST_CASE("CUDA fused BAM cross-entropy matches the CPU kernel: loss and gradient") {
  InputMaker maker(test_seed("cuda bam cross entropy"));
  struct Case {
    int64_t V, G, B, T;
    bool masking;
    int64_t world = 1, rank = 0;  // data parallelism: this rank's rows against every rank's columns
  };
  // A small case with and without masking, one view alone, the ViT-S recipe (2 + 6 views of 256),
  // and rank 2 of 4.
  for (Case c : {Case{4, 2, 8, 2, true}, Case{4, 2, 8, 2, false}, Case{1, 1, 6, 1, true}, Case{8, 2, 256, 2, true},
                 Case{4, 2, 8, 2, true, 4, 2}}) {
    for (DType dtype : {DType::f32, DType::f64}) {
      std::string what = fmt::format("V={} G={} B={} T={} masking={} rank {} of {} {}", c.V, c.G, c.B, c.T, c.masking,
                                     c.rank, c.world, dtype_name(dtype));
      CAPTURE(what);
      const int64_t C = c.T * c.B * c.world;
      const RankColumns ranks = c.world > 1 ? RankColumns{c.world * c.B, c.rank * c.B} : RankColumns{};
      // Similarities in [-1, 1] and targets whose rows sum to 1, as bam_loss gives them.
      Tensor s = maker.make({{c.V * c.B, C}, Values::unit}, maker.values({{c.V * c.B, C}, Values::unit}), dtype);
      InputSpec positive{{c.G * c.B, C}, Values::positive};
      Tensor raw = maker.make(positive, maker.values(positive), dtype);
      Tensor p = div(raw, sum(raw, {1}, true));
      Tensor cs = s.detach().requires_grad_(true), gs = s.to(Device::cuda()).detach().requires_grad_(true);
      Tensor cpu_loss = bam_cross_entropy(cs, p, c.V, c.G, c.B, 0.1, c.masking, ranks);
      Tensor gpu_loss = bam_cross_entropy(gs, p.to(Device::cuda()), c.V, c.G, c.B, 0.1, c.masking, ranks);
      Tolerance tol = tolerance_for(dtype);
      check_close(gpu_loss, to_ref(cpu_loss), tol, what + " loss");
      // Without a gradient to keep, the kernel computes the loss alone.
      Tensor loss_only =
          bam_cross_entropy(s.to(Device::cuda()), p.to(Device::cuda()), c.V, c.G, c.B, 0.1, c.masking, ranks);
      check_close(loss_only, to_ref(cpu_loss), tol, what + " loss without gradient");
      cpu_loss.backward();
      gpu_loss.backward();
      // Gradient entries are about scale / temperature / C (6e-6 at B = 256): the absolute
      // tolerance follows the largest one, or an f32 atol of 1e-5 would accept anything there.
      const double largest = max(abs(cs.grad())).item();
      check_close(gs.grad(), to_ref(cs.grad()), {largest * tol.rtol, tol.rtol}, what + " gradient");
    }
  }
}

TEST_CASE("CUDA Sinkhorn target matches the CPU kernel") {
  InputMaker maker(test_seed("cuda sinkhorn"));
  struct Case {
    int64_t V, G, B, T, iterations;
    bool masking;
  };
  for (Case c : {Case{4, 2, 8, 2, 3, true}, Case{4, 2, 8, 2, 3, false}, Case{3, 1, 5, 3, 0, true},
                 Case{8, 2, 256, 2, 3, true}}) {
    for (DType dtype : {DType::f32, DType::f64}) {
      std::string what = fmt::format("V={} G={} B={} T={} iterations={} masking={} {}", c.V, c.G, c.B, c.T,
                                     c.iterations, c.masking, dtype_name(dtype));
      CAPTURE(what);
      InputSpec spec{{c.V * c.B, c.T * c.B}, Values::unit};
      Tensor s = maker.make(spec, maker.values(spec), dtype);
      Tensor cpu = sinkhorn_target(s, 0.05, c.iterations, c.B, c.T, c.masking, c.G * c.B);
      Tensor gpu = sinkhorn_target(s.to(Device::cuda()), 0.05, c.iterations, c.B, c.T, c.masking, c.G * c.B);
      REQUIRE(gpu.device().is_cuda());
      check_close(gpu, to_ref(cpu), tolerance_for(dtype), what);
    }
  }
}

TEST_CASE("CUDA BAM loss with top-k targets (--top_k_sink) matches the CPU and queues without a wait") {
  InputMaker maker(test_seed("cuda bam loss top-k"));
  BamLossOptions o;
  o.n_global = 2;
  o.n_local = 2;
  o.target_crops = 2;
  o.top_k = 5;
  const int64_t B = 8, D = 16;
  InputSpec spec{{(o.n_global + o.n_local) * B, D}, Values::normal};
  // The kept columns are a top-k of averaged target rows: draw until no two of them are within
  // 1e-4 of each other at the cut, so f32 and f64 keep the same columns.
  Tensor z_cpu;
  for (int draw = 0; draw < 20 && !z_cpu.defined(); ++draw) {
    Tensor candidate = maker.make(spec, maker.values(spec), DType::f32).to(DType::f64);
    Tensor target = bam_loss(candidate, 0.05, o).target;
    Tensor average = mean(target.view({o.n_global, B, o.target_crops * B}), {0});
    std::vector<double> v = average.to_vector<double>();
    bool separated = true;
    for (int64_t row = 0; row < B; ++row) {
      std::vector<double> r(v.begin() + row * o.target_crops * B, v.begin() + (row + 1) * o.target_crops * B);
      std::sort(r.rbegin(), r.rend());
      separated = separated && r[o.top_k - 1] - r[o.top_k] > 1e-4;
    }
    if (separated) z_cpu = candidate;
  }
  REQUIRE_MESSAGE(z_cpu.defined(), "no draw without a near-tie at the top-k cut");
  Tensor z_gpu = z_cpu.to(DType::f32).to(Device::cuda()).requires_grad_(true);
  z_cpu.requires_grad_(true);
  BamLossResult cpu = bam_loss(z_cpu, 0.05, o);
  const int64_t waits = cuda::host_waits();
  BamLossResult gpu = bam_loss(z_gpu, 0.05, o);
  gpu.loss.backward();
  CHECK_MESSAGE(cuda::host_waits() == waits, "the loss with top-k waited for the device");
  cpu.loss.backward();
  const Tolerance tol = tolerance_for(DType::f32);
  check_close(gpu.target, to_ref(cpu.target), tol, "top-k target");
  check_close(gpu.loss, to_ref(cpu.loss), tol, "top-k loss");
  check_close(z_gpu.grad(), to_ref(z_cpu.grad()), tol, "top-k loss gradient");
}

TEST_CASE("CUDA attention at the ViT shapes: tensor-core kernels (bf16, f16) and f32 against the CPU") {
  InputMaker maker(test_seed("cuda attention shapes"));
  struct Shape4 {
    int64_t B, N, H, D;
  };
  // ViT-S/16 global (197 tokens) and local (37) crops, the Fashion-MNIST demo (17 tokens, head dim
  // 32), a head dim that is padded inside the kernel (24 -> 32) with N just past a tile (65), and
  // the smallest and largest compiled head dims (16; 128, whose kernels stream 32-row tiles), and
  // one and five tokens (one key; three of a block's four warps without a row).
  const Shape4 shapes[] = {{2, 197, 6, 64}, {3, 37, 6, 64}, {4, 17, 4, 32}, {2, 65, 2, 24}, {2, 33, 3, 16},
                           {2, 70, 2, 128}, {3, 1, 2, 64}, {2, 5, 6, 64}};
  for (Shape4 s : shapes) {
    for (DType dtype : {DType::bf16, DType::f16, DType::f32}) {
      // The 16-bit dtypes have two tensor-core implementations (kernels/cuda/attention_tc.h): both
      // must match the CPU.
      const bool two = dtype != DType::f32;
      for (const char* kernels : {"mma", "wmma"}) {
        if (!two && std::string(kernels) == "wmma") continue;
        setenv("BAM_ATTENTION", kernels, 1);
        std::string what = "attention B=" + std::to_string(s.B) + " N=" + std::to_string(s.N) +
                           " H=" + std::to_string(s.H) + " D=" + std::to_string(s.D) + " " + dtype_name(dtype) +
                           (two ? std::string(" ") + kernels : std::string());
        CAPTURE(what);
        InputSpec spec{{s.B, s.N, 3 * s.H * s.D}};
        std::vector<double> v = maker.values(spec);
        std::vector<double> exact = maker.make(spec, v, dtype).to_vector<double>();
        Tensor cpu = maker.make(spec, exact, DType::f64).requires_grad_(true);
        Tensor gpu = maker.make(spec, exact, dtype, Device::cuda()).requires_grad_(true);
        Tensor probs_gpu, probs_cpu;
        Tensor out_gpu = attention(gpu, s.H, &probs_gpu), out_cpu = attention(cpu, s.H, &probs_cpu);
        // The 16-bit kernels round the probabilities P (and in backward dS) to 16 bits before the
        // tensor-core products, as FlashAttention does, and sum over N terms: twice the elementwise
        // tolerance forward, eight times for gradients.
        Tolerance tol = tolerance_for(dtype);
        Tolerance forward{tol.atol * 2, tol.rtol * 2}, backward{tol.atol * 8, tol.rtol * 8};
        check_close(out_gpu, to_ref(out_cpu), forward, what + " forward");
        // The attention maps (rebuilt from the saved log-sum-exp): one rounding of each probability.
        check_close(probs_gpu, to_ref(probs_cpu), tol, what + " probabilities");
        std::vector<double> w = maker.values({out_gpu.shape()});
        std::vector<double> w_exact = from_vector(w, out_gpu.shape(), {DType::f64}).to(dtype).to_vector<double>();
        out_gpu.backward(from_vector(w_exact, out_gpu.shape(), {DType::f64}).to(dtype).to(Device::cuda()));
        out_cpu.backward(from_vector(w_exact, out_cpu.shape(), {DType::f64}));
        check_close(gpu.grad(), to_ref(cpu.grad()), backward, what + " gradient");
      }
    }
  }
  unsetenv("BAM_ATTENTION");
}

TEST_CASE("CUDA ops reject tensors on different devices, naming both") {
  Tensor a = ones({2, 3}, {DType::f32, Device::cuda()});
  Tensor b = ones({2, 3});
  try {
    (void)add(a, b);
    FAIL("add of a CUDA and a CPU tensor did not fail");
  } catch (const Error& e) {
    std::string message = e.what();
    CHECK(message.find("different devices") != std::string::npos);
    CHECK(message.find("cuda:0") != std::string::npos);
  }
}

TEST_CASE("One CUDA device per process: an absent or second device is refused, naming it") {
  const int count = cuda::device_count();
  const int absent = count;  // one past the last device
  const std::string not_present = fmt::format("cuda:{} is not present", absent);
  CHECK_THROWS_WITH_AS(cuda::select_device(absent), doctest::Contains(not_present.c_str()), Error);
  CHECK_NOTHROW(cuda::select_device(0));  // the device this process already runs on
  CHECK(cuda::selected_device() == 0);
  const std::string refused = fmt::format("cannot allocate on cuda:{}: this process runs on cuda:0", absent);
  CHECK_THROWS_WITH_AS(zeros({2}, {DType::f32, Device::cuda(absent)}), doctest::Contains(refused.c_str()), Error);
  CHECK(ones({3}, {DType::f32, Device::cuda()}).to(Device::cpu()).to_vector<float>() == std::vector<float>{1, 1, 1});
  // Once memory is allocated the device is fixed.
  if (count > 1) CHECK_THROWS_WITH_AS(cuda::select_device(1), doctest::Contains("already runs on cuda:0"), Error);
}

}  // namespace bam::test
