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

BamLossResult bam_loss_across_ranks(const Tensor& z_in, double eps, const BamLossOptions& o, const Tensor& z_teacher_in,
                                    Communicator& group) {
  const int64_t V = o.n_global + o.n_local, W = group.world_size(), rank = group.rank();
  BAM_CHECK(o.n_global >= 1 && o.n_local >= 0, "bam_loss: need at least one global view (got {} global, {} local)",
            o.n_global, o.n_local);
  BAM_CHECK(o.target_crops >= 1 && o.target_crops <= V, "bam_loss: target_crops {} must be in [1, {}]", o.target_crops,
            V);
  BAM_CHECK(z_in.dim() == 2 && z_in.size(0) % V == 0 && z_in.size(0) > 0,
            "bam_loss: z must be [V*B, D] with V = {} views, got {}", V, z_in.describe());
  BAM_CHECK(eps > 0 && o.temperature > 0, "bam_loss: eps ({}) and temperature ({}) must be positive", eps,
            o.temperature);
  const int64_t B = z_in.size(0) / V, D = z_in.size(1), T = o.target_crops, G = o.n_global;
  const int64_t columns = T * W * B;
  BAM_CHECK(o.top_k >= 0 && o.top_k <= columns, "bam_loss: top_k {} must be in [0, {}] (the target columns)", o.top_k,
            columns);
  BAM_CHECK(!o.positive_masking || W * B > 1, "bam_loss: with positive masking a batch of 1 image masks everything");
  const DType compute = z_in.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor z = l2_normalize(z_in.to(compute), -1);
  // Every rank's target rows, [W*T*B, D] in rank order, reordered crop-major over the whole batch:
  // column t*W*B + r*B + b is view t of rank r's image b. The gathered rows' backward sums the
  // ranks' parts (engine/distributed.h).
  auto all_targets = [&](const Tensor& rows) {
    return all_gather_rows(rows.narrow(0, 0, T * B), group)
        .reshape({W, T, B, D})
        .permute({1, 0, 2, 3})
        .contiguous()
        .reshape({columns, D});
  };
  Tensor zt, targets;
  if (z_teacher_in.defined()) {
    BAM_CHECK(z_teacher_in.shape() == z_in.shape(), "bam_loss: teacher embeddings {} do not match the student's {}",
              z_teacher_in.describe(), z_in.describe());
    NoGradGuard no_grad;
    zt = l2_normalize(z_teacher_in.detach().to(compute), -1);
    targets = all_targets(zt);
  } else {
    targets = all_targets(z);
  }
  Tensor similarities = matmul(z, targets.t());  // [V*B, T*W*B]: this rank's rows, every rank's targets
  Tensor target, entropy, loss_over_ranks;
  {
    NoGradGuard no_grad;
    Tensor target_similarities = zt.defined() ? matmul(zt, targets.t()) : similarities.detach();
    target =
        sinkhorn_target_across_ranks(target_similarities, eps, o.num_sink_iter, B, T, o.positive_masking, G * B, group);
    if (o.top_k > 0) {
      // The top-k columns of the views' average distribution, per image: this rank's rows only.
      Tensor average = mean(target.view({G, B, columns}), {0});
      Tensor index = topk(average, o.top_k, -1).second;
      Tensor repeated = cat(std::vector<Tensor>(G, index), 0);
      Tensor kept = scatter_add(zeros_like(target), 1, repeated, gather(target, 1, repeated));
      target = div(kept, sum(kept, {1}, true));
    }
    // The monitor over the whole batch: every rank's sum of p log p.
    Tensor p_log_p = sum(mul(target, log(clamp_min(target, 1e-30)))).to(DType::f64).reshape({1});
    entropy = mul(sum_over_ranks(p_log_p, group), -1.0 / static_cast<double>(G * W * B)).to(DType::f32);
  }
  // This rank's part of the whole batch's loss (its rows, averaged over all W*B images).
  Tensor loss = bam_cross_entropy(similarities, target.detach().to(compute), V, G, B, o.temperature, o.positive_masking,
                                  {W * B, rank * B, W * B});
  {
    NoGradGuard no_grad;
    loss_over_ranks = sum_over_ranks(loss.detach().to(DType::f64).reshape({1}), group).to(DType::f32).reshape({});
  }
  BamLossResult result{loss, target, entropy.reshape({1})};
  result.loss_over_ranks = loss_over_ranks;
  return result;
}

}  // namespace bam
