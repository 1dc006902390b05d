// Data-parallel tests' ranks as threads of one process, talking over loopback TCP: a free port, and
// a body run on every rank.
#pragma once

#include <functional>

#include "engine/communicator.h"

namespace bam::test {

// A port the system had free a moment ago.
int free_port();

// Runs body(rank's communicator) on `world` threads; rethrows the lowest rank's error, if any. A
// rank that fails closes its connections, so the others fail too rather than wait. Rank 0 is
// handed a listening socket (LaunchEnvironment::listen_fd), as the --nproc_per_node launcher's is.
void run_ranks(int world, const std::function<void(Communicator&)>& body);
// The same with each rank's LaunchEnvironment changed by `configure` first.
void run_ranks(int world, const std::function<void(LaunchEnvironment&)>& configure,
               const std::function<void(Communicator&)>& body);

}  // namespace bam::test
