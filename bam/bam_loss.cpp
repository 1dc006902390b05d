// The BAM loss on any device: cosine similarities (engine ops), the Sinkhorn target (bam/sinkhorn.h,
// no gradient), and the fused cross-entropy between each target view's balanced distribution and
// every other view's masked temperature log-softmax (bam/bam_cross_entropy.h).
#include "bam/bam_loss.h"

#include <cmath>

#include "bam/bam_cross_entropy.h"
#include "bam/sinkhorn.h"
#include "engine/autograd.h"
#include "engine/distributed.h"
#include "engine/error.h"

namespace bam {
namespace {

// Everything both entry points share: validated sizes, normalised embeddings, similarities.
struct Prepared {
  int64_t V, B, T, G;
  DType compute;
  Tensor z, zt, targets, similarities;
};

Prepared prepare(const Tensor& z_in, double eps, const BamLossOptions& o, const Tensor& z_teacher_in) {
  Prepared p;
  p.V = o.n_global + o.n_local;
  BAM_CHECK(o.n_global >= 1 && o.n_local >= 0, "bam_loss: need at least one global view (got {} global, {} local)",
            o.n_global, o.n_local);
  BAM_CHECK(o.target_crops >= 1 && o.target_crops <= p.V, "bam_loss: target_crops {} must be in [1, {}]",
            o.target_crops, p.V);
  BAM_CHECK(z_in.dim() == 2 && z_in.size(0) % p.V == 0 && z_in.size(0) > 0,
            "bam_loss: z must be [V*B, D] with V = {} views, got {}", p.V, z_in.describe());
  BAM_CHECK(eps > 0 && o.temperature > 0, "bam_loss: eps ({}) and temperature ({}) must be positive", eps,
            o.temperature);
  p.B = z_in.size(0) / p.V;
  p.T = o.target_crops;
  p.G = o.n_global;
  BAM_CHECK(o.top_k >= 0 && o.top_k <= p.T * p.B, "bam_loss: top_k {} must be in [0, {}] (the target columns)",
            o.top_k, p.T * p.B);
  BAM_CHECK(!o.positive_masking || p.B > 1, "bam_loss: with positive masking a batch of 1 image masks everything");
  p.compute = z_in.dtype() == DType::f64 ? DType::f64 : DType::f32;
  p.z = l2_normalize(z_in.to(p.compute), -1);
  if (z_teacher_in.defined()) {
    BAM_CHECK(z_teacher_in.shape() == z_in.shape(), "bam_loss: teacher embeddings {} do not match the student's {}",
              z_teacher_in.describe(), z_in.describe());
    p.zt = l2_normalize(z_teacher_in.detach().to(p.compute), -1);
  } else {
    p.zt = p.z;
  }
  p.targets = p.zt.narrow(0, 0, p.T * p.B);
  p.similarities = matmul(p.z, p.targets.t());  // [V*B, T*B]; grads reach rows and columns
  return p;
}

// -1/G sum_t 1/(V-1) sum_{s != t} 1/B sum_b sum_j P_t[b,j] logQ_s[b,j] (masked entries excluded),
// in one fused op (bam/bam_cross_entropy.h).
Tensor cross_entropy_part(const Prepared& p, const Tensor& target, const BamLossOptions& o) {
  BAM_CHECK(target.dim() == 2 && target.size(0) == p.G * p.B && target.size(1) == p.T * p.B,
            "bam_loss: target must be [{}, {}], got {}", p.G * p.B, p.T * p.B, target.describe());
  return bam_cross_entropy(p.similarities, target.detach().to(p.compute), p.V, p.G, p.B, o.temperature,
                           o.positive_masking);
}

}  // namespace

Tensor bam_loss_given_target(const Tensor& z, const Tensor& target, const BamLossOptions& options,
                             const Tensor& z_teacher) {
  Prepared p = prepare(z, 1.0, options, z_teacher);
  return cross_entropy_part(p, target, options);
}

BamLossResult bam_loss(const Tensor& z_in, double eps, const BamLossOptions& o, const Tensor& z_teacher_in) {
  Prepared p = prepare(z_in, eps, o, z_teacher_in);
  const int64_t B = p.B, T = p.T, G = p.G;
  Tensor target, entropy;
  {
    NoGradGuard no_grad;
    Tensor target_similarities = z_teacher_in.defined() ? matmul(p.zt, p.targets.t()) : p.similarities.detach();
    // Only the global views' rows are targets.
    target = sinkhorn_target(target_similarities, eps, o.num_sink_iter, B, T, o.positive_masking, G * B);
    if (o.top_k > 0) {
      // The top-k columns of the views' average distribution, kept in every view.
      Tensor average = mean(target.view({G, B, T * B}), {0});
      Tensor index = topk(average, o.top_k, -1).second;
      Tensor repeated = cat(std::vector<Tensor>(G, index), 0);
      Tensor kept = scatter_add(zeros_like(target), 1, repeated, gather(target, 1, repeated));
      target = div(kept, sum(kept, {1}, true));
    }
    Tensor p_log_p = mul(target, log(clamp_min(target, 1e-30)));
    entropy = mul(sum(p_log_p), -1.0 / static_cast<double>(G * B));
  }
  return {cross_entropy_part(p, target, o), target, entropy};
}

}  // namespace bam

namespace bam {

BamLossResult bam_loss_across_ranks(const Tensor& z, double eps, const BamLossOptions& o, const Tensor& z_teacher,
                                    Communicator& group, Tensor* global_z) {
  const int64_t V = o.n_global + o.n_local, W = group.world_size();
  BAM_CHECK(V >= 1 && z.dim() == 2 && z.size(0) % V == 0 && z.size(0) > 0,
            "bam_loss: z must be [V*B, D] with V = {} views, got {}", V, z.describe());
  const int64_t B = z.size(0) / V, D = z.size(1);
  // [W*V*B, D] in rank order -> [V, W, B, D] -> crop-major over the global batch.
  auto global_batch = [&](const Tensor& rows) {
    return all_gather_rows(rows, group)
        .reshape({W, V, B, D})
        .permute({1, 0, 2, 3})
        .contiguous()
        .reshape({V * W * B, D});
  };
  Tensor teacher;
  if (z_teacher.defined()) {
    NoGradGuard no_grad;
    teacher = global_batch(z_teacher.detach());
  }
  Tensor all = global_batch(z);
  if (global_z) *global_z = all;
  return bam_loss(all, eps, o, teacher);
}

}  // namespace bam
