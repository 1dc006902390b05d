// The op-test table: every differentiable op with input specs, the op call, and an independent
// naive f64 reference. tests/test_ops.cpp runs each row: forward in f64 and f32 against the
// reference, and a finite-difference gradient check in f64. Adding an op means adding a row.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tests/support.h"

namespace bam::test {

struct OpCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> run;
  std::function<Ref(const std::vector<Ref>&)> reference;  // null: forward checked elsewhere
  bool gradient = true;          // run the finite-difference check
  Tolerance f32_tolerance = tolerance_for(DType::f32);
  // The GPU test's f32 gradient tolerance where it must differ from the forward's.
  std::optional<Tolerance> f32_gradient_tolerance = std::nullopt;
  // Elementwise with broadcasting: a broadcast input's gradient sums one term per output element
  // it reaches, and expanding that input to the output's shape changes nothing else.
  bool broadcasts = false;
  // The forward rounds terms to the dtype before it sums them (a GEMM operand computed by the op,
  // an accumulator in the dtype). In 16 bits a sum that cancels keeps their error, so the forward
  // is compared with rtol on the reference of |inputs|, which bounds sum |term| for such a row.
  bool rounds_terms_before_summing = false;
};

// Rows are split over files by op family; each returns its rows.
std::vector<OpCase> elementwise_cases();
std::vector<OpCase> reduction_cases();
std::vector<OpCase> linalg_cases();
std::vector<OpCase> nn_cases();
std::vector<OpCase> shape_cases();
// Every row of the table (tests/test_ops.cpp on the CPU, tests/gpu/test_cuda_ops.cpp CUDA vs CPU).
std::vector<OpCase> all_op_cases();

}  // namespace bam::test
