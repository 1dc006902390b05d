// bamtrain --nproc_per_node N: starts N ranks of the same command on this machine, as torchrun
// does, for users without Python: each child is this program with RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR (127.0.0.1) and MASTER_PORT (a free port) set, and
// BAM_LAUNCHED_RANK=1 (it is started with --nproc_per_node too, and must not launch again). Waits
// for all of them.
#pragma once

#include <string>

namespace bam::tool {

// --nproc_per_node as torchrun reads it: a count, or "gpu" (one rank per GPU), "cpu" (one per core
// this process may run on) or "auto" (gpu when `resolved_device` is a GPU, else cpu). A bad value
// fails naming the flag.
int ranks_per_node(const std::string& text, const std::string& resolved_device);

// Runs argv (this program) as `ranks` processes and returns the exit status to report: 0 when all
// succeeded, else the first failure's (a rank killed by a signal counts as 128 + the signal).
int run_local_ranks(int ranks, char** argv);

}  // namespace bam::tool
