// The BAM objective (DESIGN.md section 4): each view's softmax "self-attention" over the target
// views is matched, by cross-entropy, to a Sinkhorn-balanced target with positive pairs masked.
// Shape letters: V views (n_global + n_local), B images per view, T target views, D embedding dim.
#pragma once

#include "engine/communicator.h"
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
  // bam_loss_across_ranks: the whole batch's loss, the sum of the ranks' `loss` (for reporting;
  // no gradient). Undefined from bam_loss, whose `loss` is the whole loss.
  Tensor loss_over_ranks = Tensor();
};

// z: projector outputs [V*B, D], crop-major, global views first; any floating dtype (the loss is
// computed in f32). eps: the Sinkhorn entropic regularisation for this epoch. With z_teacher
// (same shape, no gradient) the target comes from the teacher's similarities and the source
// compares student rows with teacher target columns.
BamLossResult bam_loss(const Tensor& z, double eps, const BamLossOptions& options, const Tensor& z_teacher = Tensor());

// Data parallelism (DESIGN.md section 4 item 10): z (and z_teacher) are this rank's [V*B, D], its
// B images of a whole batch of W*B (rank r's image b is image r*B + b). Every rank's target rows
// are gathered (all_gather_rows), crop-major and then rank-major, so the similarities are this
// rank's rows against all the target columns; the Sinkhorn target is balanced over every rank's
// rows (sinkhorn_target_across_ranks); the positive mask sits at r*B + b. `loss` is this rank's
// part of the whole batch's loss: the parts add up to bam_loss over all W*B images
// (loss_over_ranks, and target_entropy, are the whole batch's), and their gradients, once
// sum_gradients_over_ranks has added them, are that loss's gradient.
BamLossResult bam_loss_across_ranks(const Tensor& z, double eps, const BamLossOptions& options, const Tensor& z_teacher,
                                    Communicator& group);

// The cross-entropy part alone with a given (frozen) target [n_global*B, T*B]: what bam_loss
// differentiates. For finite-difference checks, which must hold the target constant.
Tensor bam_loss_given_target(const Tensor& z, const Tensor& target, const BamLossOptions& options,
                             const Tensor& z_teacher = Tensor());

}  // namespace bam
