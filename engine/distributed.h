// The collectives as autograd ops, and the gradient reduction of data-parallel training.
//
// The convention: the objective is one loss that every rank computes identically from gathered
// tensors (bam_loss_across_ranks). Backward on rank r then gives, for each of its own tensors, the
// part of the gradient that flows through rank r's own forward. The gradient of the gathered
// tensor is the same on every rank, so each rank keeps its rows of it (no communication, and the
// activation gradients are exactly one process's). A tensor that every rank's own forward reads
// (sum_over_ranks, the shared BatchNorm statistics) collects its parts by a sum over ranks, and so
// do the parameters' gradients (sum_gradients_over_ranks). (torch.distributed.nn instead takes the
// objective as the sum of per-rank losses and sums the gathered gradient over ranks: with one loss
// computed on every rank, that would count it W times.)
#pragma once

#include <vector>

#include "engine/communicator.h"
#include "engine/tensor.h"

namespace bam {

// Every rank's x stacked in rank order along dim 0 (Communicator::all_gather), for a loss that every
// rank computes the same way from it. Backward: this rank's rows of the gradient.
Tensor all_gather_rows(const Tensor& x, Communicator& group);

// The sum over ranks of x (same shape everywhere). Backward: the gradient summed over ranks.
Tensor sum_over_ranks(const Tensor& x, Communicator& group);

// Training-mode batch normalisation of x [N, C] with the statistics of every rank's rows (torch's
// SyncBatchNorm; BatchNorm1d uses it under a process group): the running statistics are updated
// with them too, the unbiased variance over all W*N rows.
Tensor batch_norm_across_ranks(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, double momentum, double eps, Communicator& group);

// After backward on every rank: each parameter's gradient becomes its sum over ranks, the gradient
// of the shared loss, in one all-reduce of a flat buffer per dtype and device. Parameters without a
// gradient are left out (the ranks run the same model, so they agree on which).
void sum_gradients_over_ranks(const std::vector<Tensor>& parameters, Communicator& group);

// Sets every rank's tensors to rank 0's values (the initial weights, when ranks might differ).
void broadcast_tensors(const std::vector<Tensor>& tensors, Communicator& group);

}  // namespace bam
