// The Sinkhorn target op: checks, the device dispatch, and the scratch the CUDA kernels need.
#include "bam/sinkhorn.h"

#include <limits>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"
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

Tensor sinkhorn_target_across_ranks(const Tensor& similarities, double eps, int64_t num_iters, int64_t batch,
                                    int64_t target_crops, bool positive_masking, int64_t out_rows,
                                    Communicator& group) {
  const DType dtype = similarities.dtype();
  BAM_CHECK(dtype == DType::f32 || dtype == DType::f64, "sinkhorn: similarities must be f32 or f64, got {}",
            similarities.describe());
  const int64_t W = group.world_size(), rows = similarities.dim() == 2 ? similarities.size(0) : 0;
  const int64_t cols = similarities.dim() == 2 ? similarities.size(1) : 0, images = W * batch;
  BAM_CHECK(batch >= 1 && target_crops >= 1 && cols == target_crops * images && rows % batch == 0 && rows > 0,
            "sinkhorn: similarities {} are not [V*{} views, {}*{} targets of {} ranks]", similarities.describe(), batch,
            target_crops, images, W);
  BAM_CHECK(out_rows >= 1 && out_rows <= rows, "sinkhorn: {} output rows of {}", out_rows, rows);
  BAM_CHECK(eps > 0 && num_iters >= 0, "sinkhorn: eps ({}) must be positive and iterations ({}) not negative", eps,
            num_iters);
  BAM_CHECK(!positive_masking || batch * W > 1, "sinkhorn: masking leaves no target column");
  NoGradGuard no_grad;
  const Device device = similarities.device();
  // K = exp(S/eps - m[j]), the exponent in S's precision and K in double as the kernel forms them,
  // with m[j] column j's maximum over every rank's unmasked rows; masked entries 0.
  // 1/eps rounded to S's precision first, as the kernel rounds it.
  const double inv_eps = dtype == DType::f32 ? static_cast<double>(static_cast<float>(1.0 / eps)) : 1.0 / eps;
  Tensor logits = mul(similarities.detach(), inv_eps);
  Tensor mask;
  if (positive_masking) {
    std::vector<double> row_image(static_cast<size_t>(rows)), column_image(static_cast<size_t>(cols));
    for (int64_t i = 0; i < rows; ++i) row_image[i] = static_cast<double>(group.rank() * batch + i % batch);
    for (int64_t j = 0; j < cols; ++j) column_image[j] = static_cast<double>(j % images);
    mask = eq(from_vector(row_image, {rows, 1}).to(device), from_vector(column_image, {1, cols}).to(device));
    logits = masked_fill(logits, mask, -std::numeric_limits<double>::infinity());
  }
  Tensor m = max(group.all_gather(max(logits, 0, true)), 0, true);  // [1, cols]
  Tensor k = exp(sub(logits, m).to(DType::f64));                    // exp(-inf) = 0 where masked
  const double column_mass = 1.0 / static_cast<double>(cols - (positive_masking ? target_crops : 0));
  const double row_mass = 1.0 / static_cast<double>(rows * W);
  Tensor m64 = m.to(DType::f64);
  Tensor x = exp(sub(m64, max(m64))), y = ones({rows, 1}, {DType::f64, device});
  for (int64_t it = 0; it < num_iters; ++it) {
    Tensor column_sums = sum(mul(k, y), {0}, true).contiguous();  // this rank's rows, then all ranks'
    group.all_reduce_sum(column_sums);
    x = div(column_mass, column_sums);
    y = div(row_mass, sum(mul(k, x), {1}, true));
  }
  Tensor plan = mul(k.narrow(0, 0, out_rows), x);
  return div(plan, sum(plan, {1}, true)).to(dtype).contiguous();
}

}  // namespace bam
