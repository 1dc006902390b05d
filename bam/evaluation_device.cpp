// The GPU-or-host choice of the evaluations: the memory they need against what the device has.
#include "bam/evaluation_device.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/cuda.h"

namespace bam {
namespace {

int& ranks_sharing_gpu() {
  static int ranks = 1;
  return ranks;
}

}  // namespace

void set_ranks_sharing_gpu(int ranks) { ranks_sharing_gpu() = std::max(1, ranks); }

EvaluationDevice evaluation_device(Device backbone_device, int64_t bytes) {
  if (!backbone_device.is_cuda()) return {Device::cpu(), ""};
  const int sharing = ranks_sharing_gpu();
  // This rank's part: the others on its GPU may not have taken theirs yet.
  const double available = static_cast<double>(cuda::memory_available()) / sharing;
  if (static_cast<double>(bytes) <= available * 0.8) return {backbone_device, backbone_device.str()};
  return {Device::cpu(),
          fmt::format("the host: it needs {:.2f} GiB on {}, more than 80 % of the {:.2f} GiB available "
                      "there{}",
                      static_cast<double>(bytes) / (1 << 30), backbone_device.str(), available / (1 << 30),
                      sharing > 1 ? fmt::format(" to each of the {} ranks sharing it", sharing) : "")};
}

}  // namespace bam
