// The one place tolerances come from: |actual - expected| <= atol + rtol * |expected|, per dtype.
// Tests (CPU vs reference, CUDA vs CPU) use these; an override states its reason beside it.
#pragma once

#include <cmath>

#include "engine/dtype.h"

namespace bam {

struct Tolerance {
  double atol;
  double rtol;
};

// Rounding of one elementwise op in the dtype, with headroom for short accumulations
// (reductions over up to ~1e3 terms). bf16 keeps 8 mantissa bits, f16 11, f32 24, f64 53.
constexpr Tolerance tolerance_for(DType dtype) {
  switch (dtype) {
    case DType::f64: return {1e-12, 1e-10};
    case DType::f32: return {1e-5, 1e-4};
    case DType::bf16: return {1e-2, 1.6e-2};
    case DType::f16: return {1e-3, 2e-3};
    default: return {0.0, 0.0};  // integers and bools compare exactly
  }
}

inline bool within_tolerance(double actual, double expected, Tolerance tol) {
  if (std::isnan(expected)) return std::isnan(actual);
  if (std::isinf(expected)) return actual == expected;
  return std::fabs(actual - expected) <= tol.atol + tol.rtol * std::fabs(expected);
}

}  // namespace bam
