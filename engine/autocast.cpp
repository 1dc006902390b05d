// The thread-local autocast state and the two casts of the policy (see autocast.h).
#include "engine/autocast.h"

#include "engine/error.h"

namespace bam {

namespace {
thread_local DType g_autocast = DType::f32;
}

AutocastGuard::AutocastGuard(DType dtype) : previous_(g_autocast) {
  BAM_CHECK(dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16,
            "autocast: the compute type must be bf16, f16 or f32 (off), got {}", dtype_name(dtype));
  g_autocast = dtype;
}

AutocastGuard::~AutocastGuard() { g_autocast = previous_; }

DType autocast_dtype() { return g_autocast; }

DType autocast_compute_dtype(const Tensor& x) {
  BAM_CHECK(x.defined(), "autocast: the tensor is undefined");
  if (g_autocast == DType::f32 || !x.device().is_cuda() || !is_floating(x.dtype())) return x.dtype();
  return g_autocast;
}

Tensor autocast_compute(const Tensor& x) {
  if (!x.defined()) return x;  // an absent bias stays absent
  return x.to(autocast_compute_dtype(x));
}

Tensor autocast_f32(const Tensor& x) {
  if (!x.defined() || (x.dtype() != DType::bf16 && x.dtype() != DType::f16)) return x;
  return x.to(DType::f32);
}

DType precision_dtype(const std::string& precision) {
  if (precision == "f32") return DType::f32;
  if (precision == "bf16") return DType::bf16;
  if (precision == "fp16" || precision == "f16") return DType::f16;
  fail("--precision: expected f32, bf16 or fp16, got '{}'", precision);
}

}  // namespace bam
