// Data parallelism's plumbing: the processes ("ranks") that train one model together, how they
// find each other (torchrun's environment), and the collectives they call in the same order:
// all-gather (or gather to rank 0), sum over ranks, broadcast from rank 0. The differentiable
// forms the model and the loss use are in engine/distributed.h.
#pragma once

#include <memory>
#include <string>

#include "engine/tensor.h"

namespace bam {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string describe() const = 0;
  // Every rank's x (same shape and dtype on all ranks), stacked along dim 0 in rank order:
  // [world * x.size(0), ...], rank r's rows at r * x.size(0). On x's device.
  virtual Tensor all_gather(const Tensor& x) = 0;
  // all_gather's result on rank 0 only (on x's device); the other ranks get no rows ([0, ...]).
  // For results only rank 0 uses, which the others need not hold. Through the host on every
  // transport.
  virtual Tensor gather_to_rank0(const Tensor& x) = 0;
  // x (f32 or f64, contiguous) becomes the sum over ranks of x, in place. Every rank ends with the
  // same bits (the sum is taken once and shared: over TCP in rank order, in NCCL's order on GPUs).
  virtual void all_reduce_sum(Tensor& x) = 0;
  // x becomes rank 0's x, in place.
  virtual void broadcast(Tensor& x) = 0;
  // NCCL's collectives do not notice a rank that stopped; they wait for it forever. With this on,
  // the process exits, saying which rank stopped, as soon as another rank's TCP connection closes,
  // until finish(). (Over TCP alone, the next collective would notice, but maybe much later.)
  virtual void exit_when_a_peer_stops() {}
  // The end of a run, called by every rank: waits for all of them, so that none exits while
  // another still works (which the watch above would take for a failure).
  virtual void finish() {}
};

// How a process was launched: torchrun's (and torch.distributed.launch's) variables RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, with Slurm's SLURM_PROCID and SLURM_LOCALID
// standing in for RANK and LOCAL_RANK (srun, as the official scripts launch); and
// BAM_CONNECT_TIMEOUT_S, how long the ranks wait for each other at start (default 300), and
// BAM_STALL_NOTICE_S, after how long a rank waiting in a TCP collective says which rank it waits
// for (default 300, then at each doubling; the wait itself goes on; NCCL has no such notice). All
// absent: one process (world_size 1). Under torchrun, whose agent holds MASTER_PORT for its own
// store (TORCHELASTIC_USE_AGENT_STORE=True), the ranks meet at MASTER_PORT + 1; BAM_MASTER_PORT,
// when set, is the port in every case.
struct LaunchEnvironment {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string port_variable = "MASTER_PORT";  // where master_port came from, for messages
  double connect_timeout_seconds = 300;
  double stall_notice_seconds = 300;
  // Rank 0: a socket already listening at master_port (BAM_LISTEN_FD, which the --nproc_per_node
  // launcher sets), taken over and closed by connect_tcp instead of binding the port anew; -1: none.
  int listen_fd = -1;
  bool distributed() const { return world_size > 1; }
};
// Reads and checks the variables; a bad value fails naming the variable.
LaunchEnvironment launch_environment_from_env();

// The ranks of `env` connected over TCP: rank 0 listens on master_addr:master_port and the others
// connect to it (retrying for up to connect_timeout_seconds while rank 0 starts). Collectives
// pass through rank 0 (a star): simple and deterministic, meant for CPU training and for the few
// bytes NCCL needs to start. Tensors on a GPU go through host memory.
std::shared_ptr<Communicator> connect_tcp(const LaunchEnvironment& env);

// For ranks on GPUs: NCCL between the GPUs (device `device` of this rank), started through `tcp`,
// which still carries CPU tensors. Null when any rank cannot use NCCL (no libnccl.so.2, a build
// without it, the CUDA emulator), with the reason in why_not: every rank then keeps TCP. A
// collective call: every rank calls it.
std::shared_ptr<Communicator> connect_nccl(std::shared_ptr<Communicator> tcp, int device, std::string* why_not);

// The communicator the process trains with (torch.distributed's default group), or null when it
// runs alone. Set once by the tool at start; BatchNorm1d reads it to share batch statistics.
Communicator* process_group();
void set_process_group(std::shared_ptr<Communicator> group);

}  // namespace bam
