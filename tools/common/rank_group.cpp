// Joining the ranks' group (tools/common/rank_group.h).
#include "tools/common/rank_group.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "bam/evaluation_device.h"
#include "engine/cuda.h"
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
  // Where every rank runs decides the transport, together: NCCL needs all of them on GPUs of their
  // own (two ranks on one GPU would stop NCCL at its start), and all must take it or none.
  Device d;
  const bool on_gpu = parse_device(device, &d) && d.is_cuda();
  const GpuPlacement placement = gpu_placement(*group, on_gpu ? cuda::device_uuid(d.index) : "");
  set_ranks_sharing_gpu(placement.sharing_mine);
  check_ranks_agree(*group, backend ? backend : "", "BAM_DIST_BACKEND",
                    "every rank needs the same BAM_DIST_BACKEND (or none)");
  const bool tcp_asked = backend != nullptr && std::string(backend) == "tcp";
  const bool nccl_required = backend != nullptr && std::string(backend) == "nccl";
  std::string why_not;
  if (placement.first_rank_on_the_cpu >= 0) {
    why_not = fmt::format("rank {} runs on the CPU", placement.first_rank_on_the_cpu);
  } else if (!placement.shared.empty()) {
    std::string ranks;
    for (size_t i = 0; i < placement.shared.size(); ++i)
      ranks += (i == 0 ? "" : i + 1 == placement.shared.size() ? " and " : ", ") + std::to_string(placement.shared[i]);
    why_not = fmt::format(
        "ranks {} share one GPU (more ranks than GPUs, or one --device cuda:N); NCCL needs a GPU for each rank", ranks);
  } else if (tcp_asked) {
    return group;
  } else if (std::shared_ptr<Communicator> nccl = connect_nccl(group, d.index, &why_not)) {
    return nccl;
  }
  if ((!on_gpu || tcp_asked) && !nccl_required) return group;  // what a CPU rank, or BAM_DIST_BACKEND=tcp, expects
  // The same on every rank (the reason comes from what all of them told each other).
  if (nccl_required) fail_on_every_rank(*group, fmt::format("BAM_DIST_BACKEND=nccl: {}", why_not));
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
