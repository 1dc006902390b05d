// The GPU-or-host choice of the evaluations: the memory they need against what the device has.
#include "bam/evaluation_device.h"

#include <fmt/format.h>

#include "engine/cuda.h"

namespace bam {

EvaluationDevice evaluation_device(Device backbone_device, int64_t bytes) {
  if (!backbone_device.is_cuda()) return {Device::cpu(), ""};
  const double available = static_cast<double>(cuda::memory_available());
  if (static_cast<double>(bytes) <= available * 0.8) return {backbone_device, backbone_device.str()};
  return {Device::cpu(),
          fmt::format("the host: it needs {:.2f} GiB on {}, more than 80 % of the {:.2f} GiB available there",
                      static_cast<double>(bytes) / (1 << 30), backbone_device.str(), available / (1 << 30))};
}

}  // namespace bam
