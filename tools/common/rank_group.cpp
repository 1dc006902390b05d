// Joining the ranks' group (tools/common/rank_group.h).
#include "tools/common/rank_group.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "engine/device.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "kernels/cpu/parallel.h"

namespace bam::tool {

std::shared_ptr<Communicator> join_rank_group(const LaunchEnvironment& launch, const std::string& device) {
  const char* backend = std::getenv("BAM_DIST_BACKEND");
  if (backend != nullptr && *backend == '\0') backend = nullptr;  // empty: unset
  BAM_CHECK(backend == nullptr || std::string(backend) == "tcp" || std::string(backend) == "nccl",
            "BAM_DIST_BACKEND={}: expected tcp or nccl", backend ? backend : "");
  std::shared_ptr<Communicator> group = connect_tcp(launch);
  // A rank that stops (an error, a kill) stops the others at once, naming it, instead of leaving
  // them waiting in their next collective, or in NCCL (its start included) for ever.
  group->exit_when_a_peer_stops();
  Device d;
  if (!parse_device(device, &d) || !d.is_cuda() || (backend != nullptr && std::string(backend) == "tcp")) return group;
  std::string why_not;
  if (std::shared_ptr<Communicator> nccl = connect_nccl(group, d.index, &why_not)) return nccl;
  BAM_CHECK(backend == nullptr, "BAM_DIST_BACKEND=nccl: {}", why_not);
  std::printf("note: the ranks talk over TCP through host memory, which is slower: %s\n", why_not.c_str());
  return group;
}

int share_cores_among_local_ranks(Communicator& group) {
  const int sharing = ranks_sharing_cores(group);
  if (cpu::num_threads_requested() == 0 && sharing > 1)
    cpu::set_num_threads(std::max(1, cpu::available_cores() / sharing));
  return cpu::num_threads();
}

}  // namespace bam::tool
