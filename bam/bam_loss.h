// The BAM objective (DESIGN.md section 4): each view's softmax "self-attention" over the target
// views is matched, by cross-entropy, to a Sinkhorn-balanced target with positive pairs masked.
// Shape letters: V views (n_global + n_local), B images per view, T target views, D embedding dim.
#pragma once

#include "engine/ops.h"

namespace bam {

struct BamLossOptions {
  int64_t n_global = 2;
  int64_t n_local = 0;
  int64_t target_crops = 2;     // T: the first T views are the targets
  double temperature = 0.1;     // of the source softmax
  int64_t num_sink_iter = 3;
  int64_t top_k = 0;            // keep only each row's top-k target entries (0: all)
  bool positive_masking = true; // mask every view of the same image (itself included)
};

struct BamLossResult {
  Tensor loss;            // scalar f32; gradient flows into z (and only z)
  Tensor target;          // the balanced target P [n_global*B, T*B], no gradient
  // Mean entropy of P's rows (nats), a collapse/sharpness monitor: a one-element tensor on z's
  // device, left there so that computing it never makes the host wait (reading it does).
  Tensor target_entropy;
};

// z: projector outputs [V*B, D], crop-major, global views first; any floating dtype (the loss is
// computed in f32). eps: the Sinkhorn entropic regularisation for this epoch. With z_teacher
// (same shape, no gradient) the target comes from the teacher's similarities and the source
// compares student rows with teacher target columns.
BamLossResult bam_loss(const Tensor& z, double eps, const BamLossOptions& options, const Tensor& z_teacher = Tensor());

// The cross-entropy part alone with a given (frozen) target [n_global*B, T*B]: what bam_loss
// differentiates. For finite-difference checks, which must hold the target constant.
Tensor bam_loss_given_target(const Tensor& z, const Tensor& target, const BamLossOptions& options,
                             const Tensor& z_teacher = Tensor());

}  // namespace bam
