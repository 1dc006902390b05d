// The collectives as autograd ops, and the gradient averaging of data-parallel training. The
// backward rules are torch.distributed.nn's: the objective is the sum of every rank's loss, so a
// gathered tensor's gradient is summed over ranks before each rank takes its own rows back.
#pragma once

#include <vector>

#include "engine/communicator.h"
#include "engine/tensor.h"

namespace bam {

// Every rank's x stacked in rank order along dim 0 (Communicator::all_gather). Backward: the
// gradient summed over ranks, then this rank's rows.
Tensor all_gather_rows(const Tensor& x, Communicator& group);

// The sum over ranks of x (same shape everywhere). Backward: the gradient summed over ranks.
Tensor sum_over_ranks(const Tensor& x, Communicator& group);

// Training-mode batch normalisation of x [N, C] with the statistics of every rank's rows (torch's
// SyncBatchNorm; BatchNorm1d uses it under a process group): the running statistics are updated
// with them too, the unbiased variance over all W*N rows.
Tensor batch_norm_across_ranks(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, double momentum, double eps, Communicator& group);

// After backward on every rank: each parameter's gradient becomes the mean over ranks (a
// parameter without one counts as zeros), in one all-reduce of a flat buffer per dtype and device.
void average_gradients(const std::vector<Tensor>& parameters, Communicator& group);

// Sets every rank's tensors to rank 0's values (the initial weights, when ranks might differ).
void broadcast_tensors(const std::vector<Tensor>& tensors, Communicator& group);

}  // namespace bam
