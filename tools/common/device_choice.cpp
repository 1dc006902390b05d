// Resolution of the "auto" device and precision flags (device_choice.h).
#include "tools/common/device_choice.h"

#include "engine/cuda.h"
#include "engine/error.h"
#include "kernels/cpu/cpu_features.h"

namespace bam::tool {

std::string resolve_device(const std::string& device) {
  if (device != "auto") return device;
  return cuda::is_available() ? "cuda" : "cpu";
}

std::string cpu_fallback_note(const std::string& asked, const std::string& resolved_device) {
  if (asked != "auto" || resolved_device != "cpu") return "";
  return "note: --device auto: no GPU answered (" + cuda::unavailable_reason() +
         "), so this runs on the CPU (--device cpu asks for it)";
}

std::string resolve_precision(const std::string& precision, const std::string& resolved_device) {
  if (precision != "auto") return precision;
  if (resolved_device.rfind("cuda", 0) == 0) return "bf16";
  return cpu::cpu_has_amx_bf16() || cpu::cpu_has_avx512_bf16() ? "bf16" : "f32";
}

std::string resolve_data_backend(const std::string& backend, const std::string& resolved_device) {
  if (backend != "auto") return backend;
  return resolved_device.rfind("cuda", 0) == 0 && cuda::built_with_cuda() ? "gpu" : "cpu";
}

Device open_device(const std::string& resolved_device) {
  Device device;
  BAM_CHECK(parse_device(resolved_device, &device), "--device must be cpu, cuda, cuda:N or auto, got '{}'",
            resolved_device);
  if (device.is_cuda()) {
    BAM_CHECK(cuda::is_available(), "--device {}: {}", resolved_device, cuda::unavailable_reason());
    try {
      cuda::select_device(device.index);
    } catch (const Error& e) {
      fail("--device {}: {}", resolved_device, e.what());
    }
  }
  return device;
}

}  // namespace bam::tool
