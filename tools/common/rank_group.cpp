// Joining the ranks' group (tools/common/rank_group.h).
#include "tools/common/rank_group.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/cpu/parallel.h"

namespace bam::tool {

std::shared_ptr<Communicator> join_rank_group(const LaunchEnvironment& launch, const std::string& device) {
  const char* backend = std::getenv("BAM_DIST_BACKEND");
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
  // This process's identity for the purpose: its machine (an FNV-1a hash of the host name) and
  // the CPUs it may run on.
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  uint64_t hash = 1469598103934665603ull;
  for (const char* c = host; *c != '\0'; ++c) hash = (hash ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (::sched_getaffinity(0, sizeof(mask), &mask) != 0) CPU_ZERO(&mask);  // unknown: the same as its peers'
  constexpr size_t kWords = sizeof(cpu_set_t) / sizeof(int64_t);
  std::vector<int64_t> mine(1 + kWords);
  mine[0] = static_cast<int64_t>(hash);
  std::memcpy(&mine[1], &mask, sizeof(mask));
  const int64_t width = static_cast<int64_t>(mine.size());
  const std::vector<int64_t> all = group.all_gather(from_vector(mine, {1, width})).to_vector<int64_t>();
  int sharing = 0;
  for (int r = 0; r < group.world_size(); ++r) sharing += std::equal(mine.begin(), mine.end(), all.begin() + r * width);
  if (cpu::num_threads_requested() == 0 && sharing > 1)
    cpu::set_num_threads(std::max(1, cpu::available_cores() / sharing));
  return cpu::num_threads();
}

}  // namespace bam::tool
