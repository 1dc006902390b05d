// The Sinkhorn target op: checks, the device dispatch, and the scratch the CUDA kernels need.
#include "bam/sinkhorn.h"

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "kernels/cpu/sinkhorn.h"
#ifdef BAM_WITH_CUDA
#include "kernels/cuda/sinkhorn.h"
#endif

namespace bam {

Tensor sinkhorn_target(const Tensor& similarities, double eps, int64_t num_iters, int64_t batch,
                       int64_t target_crops, bool positive_masking, int64_t out_rows) {
  const DType dtype = similarities.dtype();
  BAM_CHECK(dtype == DType::f32 || dtype == DType::f64, "sinkhorn: similarities must be f32 or f64, got {}",
            similarities.describe());
  BAM_CHECK(similarities.dim() == 2, "sinkhorn: similarities must be [V*B, T*B], got {}", similarities.describe());
  const int64_t rows = similarities.size(0), cols = similarities.size(1);
  BAM_CHECK(batch >= 1 && target_crops >= 1 && cols == target_crops * batch && rows % batch == 0 && cols <= rows,
            "sinkhorn: similarities {} are not [V*{} views, {}*{} targets]", similarities.describe(), batch,
            target_crops, batch);
  BAM_CHECK(out_rows >= 1 && out_rows <= rows, "sinkhorn: {} output rows of {}", out_rows, rows);
  BAM_CHECK(eps > 0 && num_iters >= 0, "sinkhorn: eps ({}) must be positive and iterations ({}) not negative", eps,
            num_iters);
  BAM_CHECK(!positive_masking || cols > target_crops, "sinkhorn: masking leaves no target column");
  NoGradGuard no_grad;
  Tensor s = similarities.detach().contiguous();
  Tensor out = empty({out_rows, cols}, {dtype, s.device()});
  const cpu::SinkhornShape shape{rows,
                                 cols,
                                 batch,
                                 out_rows,
                                 eps,
                                 num_iters,
                                 1.0 / static_cast<double>(cols - (positive_masking ? target_crops : 0)),
                                 1.0 / static_cast<double>(rows),
                                 positive_masking};
  if (s.device().is_cuda()) {
#ifdef BAM_WITH_CUDA
    size_t bytes = cuda_kernels::sinkhorn_scratch_bytes(dtype, shape);
    Tensor scratch = empty({static_cast<int64_t>(bytes)}, {DType::u8, s.device()});
    cuda_kernels::sinkhorn_balance(dtype, s.raw_data(), out.raw_data(), scratch.raw_data(), shape,
                                   cuda::current_stream());
#else
    fail("sinkhorn: this build has no CUDA backend");
#endif
  } else if (dtype == DType::f32) {
    cpu::sinkhorn_balance<float>(s.data<float>(), out.data<float>(), shape);
  } else {
    cpu::sinkhorn_balance<double>(s.data<double>(), out.data<double>(), shape);
  }
  return out;
}

}  // namespace bam
