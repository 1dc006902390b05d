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

// Everything the entry points share: validated sizes, normalised embeddings, similarities. With a
// group (data parallelism), this rank's rows against every rank's target columns: W ranks, this
// one's images at first_image among the W*B of each target view.
struct Prepared {
  int64_t V, B, T, G, W, first_image, columns;
  DType compute;
  Tensor z, zt, targets, similarities;
};

Prepared prepare(const Tensor& z_in, double eps, const BamLossOptions& o, const Tensor& z_teacher_in,
                 Communicator* group) {
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
  p.W = group ? group->world_size() : 1;
  p.first_image = group ? group->rank() * p.B : 0;
  p.columns = p.T * p.W * p.B;
  BAM_CHECK(o.top_k >= 0 && o.top_k <= p.columns, "bam_loss: top_k {} must be in [0, {}] (the target columns)", o.top_k,
            p.columns);
  BAM_CHECK(!o.positive_masking || p.W * p.B > 1,
            "bam_loss: with positive masking a batch of 1 image masks everything");
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
  if (group) {
    // Every rank's target rows, [W*T*B, D] in rank order, reordered crop-major over the whole
    // batch: column t*W*B + r*B + b is view t of rank r's image b. The gathered rows' backward
    // sums the ranks' parts (engine/distributed.h); a teacher's rows record nothing.
    const int64_t D = z_in.size(1);
    p.targets = all_gather_rows(p.targets, *group)
                    .reshape({p.W, p.T, p.B, D})
                    .permute({1, 0, 2, 3})
                    .contiguous()
                    .reshape({p.columns, D});
  }
  p.similarities = matmul(p.z, p.targets.t());  // [V*B, columns]; grads reach rows and columns
  return p;
}

// -1/G sum_t 1/(V-1) sum_{s != t} 1/B sum_b sum_j P_t[b,j] logQ_s[b,j] (masked entries excluded),
// in one fused op (bam/bam_cross_entropy.h); with ranks, this rank's part (averaged over all W*B).
Tensor cross_entropy_part(const Prepared& p, const Tensor& target, const BamLossOptions& o) {
  BAM_CHECK(target.dim() == 2 && target.size(0) == p.G * p.B && target.size(1) == p.columns,
            "bam_loss: target must be [{}, {}], got {}", p.G * p.B, p.columns, target.describe());
  return bam_cross_entropy(p.similarities, target.detach().to(p.compute), p.V, p.G, p.B, o.temperature,
                           o.positive_masking, {p.W * p.B, p.first_image});
}

// The balanced target of this process's global-view rows (no gradient), with top-k, and the sum
// of its p log p (for the entropy monitor).
std::pair<Tensor, Tensor> balanced_target(const Prepared& p, double eps, const BamLossOptions& o, Communicator* group) {
  NoGradGuard no_grad;
  const bool teacher = !p.zt.same(p.z);
  Tensor target_similarities = teacher ? matmul(p.zt, p.targets.t()) : p.similarities.detach();
  // Only the global views' rows are targets.
  Tensor target =
      group ? sinkhorn_target_across_ranks(target_similarities, eps, o.num_sink_iter, p.B, p.T, o.positive_masking,
                                           p.G * p.B, *group)
            : sinkhorn_target(target_similarities, eps, o.num_sink_iter, p.B, p.T, o.positive_masking, p.G * p.B);
  if (o.top_k > 0) {
    // The top-k columns of the views' average distribution, kept in every view.
    Tensor average = mean(target.view({p.G, p.B, p.columns}), {0});
    Tensor index = topk(average, o.top_k, -1).second;
    Tensor repeated = cat(std::vector<Tensor>(p.G, index), 0);
    Tensor kept = scatter_add(zeros_like(target), 1, repeated, gather(target, 1, repeated));
    target = div(kept, sum(kept, {1}, true));
  }
  Tensor p_log_p = sum(mul(target, log(clamp_min(target, 1e-30))));
  return {target, p_log_p};
}

}  // namespace

Tensor bam_loss_given_target(const Tensor& z, const Tensor& target, const BamLossOptions& options,
                             const Tensor& z_teacher) {
  Prepared p = prepare(z, 1.0, options, z_teacher, nullptr);
  return cross_entropy_part(p, target, options);
}

BamLossResult bam_loss(const Tensor& z_in, double eps, const BamLossOptions& o, const Tensor& z_teacher_in) {
  Prepared p = prepare(z_in, eps, o, z_teacher_in, nullptr);
  auto [target, p_log_p] = balanced_target(p, eps, o, nullptr);
  Tensor entropy;
  {
    NoGradGuard no_grad;
    entropy = mul(p_log_p, -1.0 / static_cast<double>(p.G * p.B));
  }
  return {cross_entropy_part(p, target, o), target, entropy};
}

BamLossResult bam_loss_across_ranks(const Tensor& z_in, double eps, const BamLossOptions& o, const Tensor& z_teacher_in,
                                    Communicator& group) {
  Prepared p = prepare(z_in, eps, o, z_teacher_in, &group);
  auto [target, p_log_p] = balanced_target(p, eps, o, &group);
  // This rank's part of the whole batch's loss (its rows, averaged over all W*B images).
  Tensor loss = cross_entropy_part(p, target, o);
  // The monitors of the whole batch, in one sum over ranks: the loss parts and the sums of p log p.
  NoGradGuard no_grad;
  Tensor sums = cat({loss.detach().to(DType::f64).reshape({1}), p_log_p.to(DType::f64).reshape({1})}, 0);
  sums = sum_over_ranks(sums, group);
  BamLossResult result{loss, target,
                       mul(sums.narrow(0, 1, 1), -1.0 / static_cast<double>(p.G * p.W * p.B)).to(DType::f32)};
  result.loss_over_ranks = sums.narrow(0, 0, 1).to(DType::f32).reshape({});
  return result;
}

}  // namespace bam
