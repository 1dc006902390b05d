// The fused BAM cross-entropy op: shape checks, the device dispatch to the row kernels, the sum of
// the per-row losses, and a backward that scales the saved gradient by the incoming one.
#include "bam/bam_cross_entropy.h"

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/cpu/bam_cross_entropy.h"
#ifdef BAM_WITH_CUDA
#include "kernels/cuda/bam_cross_entropy.h"
#endif

namespace bam {

Tensor bam_cross_entropy(const Tensor& similarities, const Tensor& target, int64_t views, int64_t globals,
                         int64_t batch, double temperature, bool positive_masking, const RankColumns& ranks) {
  const DType dtype = similarities.dtype();
  BAM_CHECK(dtype == DType::f32 || dtype == DType::f64, "bam_cross_entropy: similarities must be f32 or f64, got {}",
            similarities.describe());
  BAM_CHECK(views >= 1 && globals >= 1 && globals <= views && batch >= 1,
            "bam_cross_entropy: need 1 <= globals ({}) <= views ({}) and batch ({}) >= 1", globals, views, batch);
  BAM_CHECK(similarities.dim() == 2 && similarities.size(0) == views * batch,
            "bam_cross_entropy: similarities must be [{} views x {} images, columns], got {}", views, batch,
            similarities.describe());
  const int64_t columns = similarities.size(1);
  BAM_CHECK(target.dim() == 2 && target.size(0) == globals * batch && target.size(1) == columns,
            "bam_cross_entropy: target must be [{}, {}], got {}", globals * batch, columns, target.describe());
  BAM_CHECK(target.dtype() == dtype && target.device() == similarities.device(),
            "bam_cross_entropy: target {} must match the similarities {} in dtype and device", target.describe(),
            similarities.describe());
  BAM_CHECK(temperature > 0, "bam_cross_entropy: temperature must be positive, got {}", temperature);

  const bool need_grad = any_requires_grad({&similarities});
  Tensor s = similarities.detach().contiguous(), p = target.detach().contiguous();
  const Device device = s.device();
  Tensor row_loss = empty({views * batch}, {dtype, device});
  Tensor d_s = need_grad ? empty(s.shape(), {dtype, device}) : Tensor();
  BAM_CHECK(ranks.column_batch == 0 || (columns % ranks.column_batch == 0 && ranks.first_image >= 0 &&
                                        ranks.first_image + batch <= ranks.column_batch),
            "bam_cross_entropy: rows of images {}..{} are not among {} columns of {} images per view",
            ranks.first_image, ranks.first_image + batch - 1, columns, ranks.column_batch);
  const cpu::BamCrossEntropyShape shape{
      views, globals, batch, columns, temperature, positive_masking, ranks.column_batch, ranks.first_image};
  if (device.is_cuda()) {
#ifdef BAM_WITH_CUDA
    cuda_kernels::bam_cross_entropy(dtype, s.raw_data(), p.raw_data(), row_loss.raw_data(),
                                    need_grad ? d_s.raw_data() : nullptr, shape, cuda::current_stream());
#else
    fail("bam_cross_entropy: this build has no CUDA backend");
#endif
  } else if (dtype == DType::f32) {
    cpu::bam_cross_entropy<float>(s.data<float>(), p.data<float>(), row_loss.data<float>(),
                                  need_grad ? d_s.data<float>() : nullptr, shape);
  } else {
    cpu::bam_cross_entropy<double>(s.data<double>(), p.data<double>(), row_loss.data<double>(),
                                   need_grad ? d_s.data<double>() : nullptr, shape);
  }
  Tensor loss;
  {
    NoGradGuard no_grad;
    loss = sum(row_loss);
  }
  if (!need_grad) return loss;
  return record("bam_cross_entropy", loss, {similarities},
                [d_s](const Tensor& g) { return std::vector<Tensor>{mul(d_s, g)}; });
}

}  // namespace bam
