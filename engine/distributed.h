// The collectives as autograd ops, and the gradient reduction of data-parallel training.
//
// The convention is torch.distributed.nn's: the objective is the sum of the ranks' losses, each
// rank's being its part of the whole batch's loss (bam_loss_across_ranks). Backward on rank r
// gives the gradient of its own part. A tensor that every rank's part reads (the gathered target
// rows, the shared BatchNorm statistics) therefore collects its gradient by a sum over ranks, and
// so do the parameters' gradients (sum_gradients_over_ranks). The activation gradients are then
// exactly those of one process that holds the whole batch.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/communicator.h"
#include "engine/tensor.h"

namespace bam {

// Every rank's x stacked in rank order along dim 0 (Communicator::all_gather). Backward: the
// gradient summed over ranks, then this rank's rows.
Tensor all_gather_rows(const Tensor& x, Communicator& group);

// Every rank's rows of x, however many each holds (none included), stacked in rank order: what
// one process holding them all would have. The dtype and the size of a row must be the same on
// every rank. Not differentiable: for results gathered after the fact (evaluation features, the
// located object boxes), on x's device. rows_per_rank, when given, receives each rank's count.
Tensor all_gather_varying_rows(const Tensor& x, Communicator& group, std::vector<int64_t>* rows_per_rank = nullptr);
// The same on rank 0 only (Communicator::gather_to_rank0); the others get no rows, and every rank
// gets rows_per_rank. For what rank 0 alone goes on with (the linear probe's features).
Tensor gather_varying_rows_to_rank0(const Tensor& x, Communicator& group,
                                    std::vector<int64_t>* rows_per_rank = nullptr);

// Throws `message` on every rank at once: each calls it, after a collective that told them all of
// the failure. The peer watch (Communicator::exit_when_a_peer_stops) is stood down first
// (finish()), so that no rank is stopped by another's exit before it has reported.
[[noreturn]] void fail_on_every_rank(Communicator& group, const std::string& message);

// Whether `value` holds on every rank (one all-reduce): for what the ranks must decide together,
// such as whether a piece of work fits in each one's memory.
bool true_on_every_rank(Communicator& group, bool value);

// Every rank's `problem` with its inputs ("" for none), shared: when any rank has one, every rank
// throws at once (fail_on_every_rank), with its own problem and the rank's number, or `elsewhere`.
// Before a collective whose sizes a wrong input would make differ, so that no rank waits in it.
void fail_if_any_rank(Communicator& group, const std::string& problem, const std::string& elsewhere);

// Stops every rank when any rank's `text` (its flags, what it read) differs from rank 0's: ranks
// that differ would call the collectives in other orders or sizes, which a transport cannot always
// tell. The message says which ranks were started with other `what` ("flags") than rank 0, and
// `hint`, what every rank needs. Compares a hash of the text. A collective call.
void check_ranks_agree(Communicator& group, const std::string& text, const std::string& what, const std::string& hint);

// The same for a list of named items (a rank's flags one by one: {"--seed", "7"}, ...), whose
// message also names the items that differ: "rank 1 was started with other flags than rank 0
// (--seed, --lr): <hint>". Ranks whose lists have other names (another build of the tool) stop
// too. Compares a hash of each item; two collective calls.
void check_ranks_agree(Communicator& group, const std::vector<std::pair<std::string, std::string>>& items,
                       const std::string& what, const std::string& hint);

// The sum of every value of `tensors`, in order, in f64 on the host: the same bits from the same
// weights on any rank, for check_ranks_agree's callers to compare. Not collective.
double weight_checksum(const std::vector<Tensor>& tensors);

// How many ranks, this one included, run on this process's cores: those on the same machine (host
// name) with the same CPU affinity mask. Ranks started side by side share all; ranks pinned to
// cores of their own share none. One all-gather. (Affinity is per thread on Linux: this reads the
// calling thread's.)
int ranks_sharing_cores(Communicator& group);

// How many ranks, this one included, run on this process's machine (the same host name). One
// all-gather.
int ranks_on_this_machine(Communicator& group);

// Where the ranks' GPUs are, from each rank's `gpu` (its GPU's identity, cuda::device_uuid, or ""
// for a rank on the CPU) and its machine (host name): ranks on one machine with the same identity
// share one GPU. One all-gather. NCCL needs every rank on a GPU of its own, and ranks that share
// a GPU share its memory.
struct GpuPlacement {
  int ranks_on_gpus = 0;           // of the world
  int sharing_mine = 1;            // ranks on this rank's GPU, this one included (1 on the CPU)
  std::vector<int> shared;         // the ranks on the first GPU that more than one rank uses, if any
  int first_rank_on_the_cpu = -1;  // -1 when every rank is on a GPU
};
GpuPlacement gpu_placement(Communicator& group, const std::string& gpu);

// The sum over ranks of x (same shape everywhere). Backward: the gradient summed over ranks.
Tensor sum_over_ranks(const Tensor& x, Communicator& group);

// Training-mode batch normalisation of x [N, C] with the statistics of every rank's rows (torch's
// SyncBatchNorm; BatchNorm1d uses it under a process group): the running statistics are updated
// with them too, the unbiased variance over all W*N rows.
Tensor batch_norm_across_ranks(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, double momentum, double eps, Communicator& group);

// After backward on every rank: each parameter's gradient becomes its sum over ranks, the gradient
// of the whole batch's loss, in one all-reduce of a flat buffer per dtype and device. Parameters without a
// gradient are left out (the ranks run the same model, so they agree on which).
void sum_gradients_over_ranks(const std::vector<Tensor>& parameters, Communicator& group);

}  // namespace bam
