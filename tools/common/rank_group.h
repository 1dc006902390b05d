// How bamtrain's ranks meet (data parallelism): over TCP at MASTER_ADDR:MASTER_PORT, each watching
// the others' connections, and then, on GPUs, over NCCL when every rank can open it.
#pragma once

#include <memory>
#include <string>

#include "engine/communicator.h"

namespace bam::tool {

// Connects this rank to the others and returns the group it trains with. `device` is the rank's
// resolved --device. The ranks choose together: NCCL when every rank is on a GPU of its own
// (gpu_placement, engine/distributed.h) and can open it, else TCP with a note saying why.
// BAM_DIST_BACKEND=tcp keeps TCP on GPUs; =nccl fails instead of the note. Tells the evaluations
// how many ranks share this rank's GPU (set_ranks_sharing_gpu).
std::shared_ptr<Communicator> join_rank_group(const LaunchEnvironment& launch, const std::string& device);

// Ranks that run on the same cores share them: unless BAM_NUM_THREADS is set, each rank's CPU
// kernels take the cores it may run on divided by ranks_sharing_cores() (engine/distributed.h).
// Ranks started side by side (torchrun, --nproc_per_node, by hand, srun without binding) divide
// the machine; ranks pinned to cores of their own (srun's binding, numactl or taskset per rank)
// keep theirs. Without this, each rank would start a thread per core. Returns the rank's thread
// count. A collective call.
int share_cores_among_local_ranks(Communicator& group);

}  // namespace bam::tool
