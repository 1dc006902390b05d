// bamtrain --nproc_per_node N: starts N ranks of the same command on this machine, as torchrun
// does, for users without Python: each child is this program with RANK, LOCAL_RANK, WORLD_SIZE,
// MASTER_ADDR (127.0.0.1) and MASTER_PORT (a free port) set, and BAM_LAUNCHED_RANK=1 (it is
// started with --nproc_per_node too, and must not launch again). Waits for all of them.
#pragma once

namespace bam::tool {

// Runs argv (this program) as `ranks` processes and returns the exit status to report: 0 when all
// succeeded, else the first failure's (a rank killed by a signal counts as 128 + the signal).
int run_local_ranks(int ranks, char** argv);

}  // namespace bam::tool
