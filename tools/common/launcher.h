// bamtrain and bamprobe --nproc_per_node N: start N ranks of the same command on this machine, as torchrun
// does, for users without Python: each child is this program with RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR (127.0.0.1) and MASTER_PORT (a free port) set, and
// BAM_LAUNCHED_RANK=1 (it is started with --nproc_per_node too, and must not launch again). Waits
// for all of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "engine/communicator.h"

namespace bam::tool {

// How this process runs, from --nproc_per_node and torchrun's variables: as the launcher of the
// ranks (it starts them with run_local_ranks and does nothing else), as one rank of several, or
// alone.
struct RankLaunch {
  LaunchEnvironment launch;  // this process's rank, world size and local rank
  int nproc_per_node = 1;
  bool launcher = false;
  std::string tool_name;  // "bamtrain" or "bamtrain (rank 2)": what its errors start with
};

// Reads both; fails naming the flag or variable, and when --nproc_per_node > 1 is given to a
// process that is already a rank. `local_rank` is --local-rank's value when given (as
// torch.distributed.launch passes it): the local rank when LOCAL_RANK is unset; a process that is
// not a rank says it has no effect. A rank other than 0 has its standard output silenced (its
// errors still reach standard error), so that one rank reports.
RankLaunch read_rank_launch(const char* tool, const std::string& nproc_per_node, const std::string& resolved_device,
                            std::optional<int64_t> local_rank);

// A rank's device: "cuda" becomes cuda:LOCAL_RANK, modulo the GPUs the rank sees (srun's GPU
// binding shows each rank only its own); anything else stays.
std::string rank_device(const LaunchEnvironment& launch, const std::string& resolved_device);

// --nproc_per_node as torchrun reads it: a count, or "gpu" (one rank per GPU), "cpu" (one per core
// this process may run on) or "auto" (gpu when `resolved_device` is a GPU, else cpu). A bad value
// fails naming the flag.
int ranks_per_node(const std::string& text, const std::string& resolved_device);

// Runs argv (this program) as `ranks` processes and returns the exit status to report: 0 when all
// succeeded, else the first failure's (a rank killed by a signal counts as 128 + the signal). The
// ranks meet at a loopback port that listens before the first of them starts, handed to rank 0
// (BAM_LISTEN_FD, tcp::listen_on_loopback). A
// SIGINT, SIGTERM or SIGHUP the launcher gets is passed on to the ranks; when they end by it (as
// bamtrain's do once saved), the launcher ends by the same signal and does not return.
int run_local_ranks(int ranks, char** argv);

}  // namespace bam::tool
