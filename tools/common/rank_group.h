// How bamtrain's ranks meet (data parallelism): over TCP at MASTER_ADDR:MASTER_PORT, each watching
// the others' connections, and then, on GPUs, over NCCL when every rank can open it.
#pragma once

#include <memory>
#include <string>

#include "engine/communicator.h"

namespace bam::tool {

// Connects this rank to the others and returns the group it trains with. `device` is the rank's
// resolved --device. BAM_DIST_BACKEND=tcp keeps TCP on GPUs; =nccl fails when NCCL cannot be used
// (unset: NCCL when it can be, else TCP with a note).
std::shared_ptr<Communicator> join_rank_group(const LaunchEnvironment& launch, const std::string& device);

// The ranks started on one machine share its cores: unless BAM_NUM_THREADS is set, each rank's
// CPU kernels get the cores this process may run on divided by LOCAL_WORLD_SIZE (at least one),
// instead of all of them each. (torchrun sets OMP_NUM_THREADS=1 for PyTorch's reason alike.)
// Returns the rank's thread count.
int share_cores_among_local_ranks(const LaunchEnvironment& launch);

}  // namespace bam::tool
