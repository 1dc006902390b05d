// The tools' environment variables, checked (tools/common/environment.h).
#include "tools/common/environment.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "engine/whole_number.h"
#include "kernels/cpu/parallel.h"

namespace bam::tool {

void check_environment_variables() {
  auto value = [](const char* name) -> std::string {
    const char* text = std::getenv(name);
    return text ? text : "";
  };
  if (const std::string threads = value("BAM_NUM_THREADS"); !threads.empty())
    BAM_CHECK(parse_whole_number(threads, 1, cpu::kMaxThreads).has_value(),
              "BAM_NUM_THREADS={}: expected a count of threads from 1 to {} (unset: the cores this process may use)",
              threads, cpu::kMaxThreads);
  if (const std::string memory = value("BAM_AVAILABLE_MEMORY_MIB"); !memory.empty()) {
    char* end = nullptr;
    const double mib = std::strtod(memory.c_str(), &end);
    // At least a byte (0 would read as "unknown"), at most 2^40 MiB (what a byte count holds).
    BAM_CHECK(
        end == memory.c_str() + memory.size() && std::isfinite(mib) && mib * 1048576.0 >= 1.0 && mib <= 1099511627776.0,
        "BAM_AVAILABLE_MEMORY_MIB={}: expected a number of MiB from 1 byte's worth to 2^40 (unset: what the "
        "system reports)",
        memory);
  }
  if (const std::string cache = value("BAM_CPU_CACHE_MB"); !cache.empty())
    BAM_CHECK(parse_whole_number(cache, 0, int64_t{1} << 30).has_value(),
              "BAM_CPU_CACHE_MB={}: expected a whole number of MiB for the host tensor cache (0 keeps none)", cache);
  if (const std::string backend = value("BAM_DIST_BACKEND"); !backend.empty())
    BAM_CHECK(backend == "tcp" || backend == "nccl", "BAM_DIST_BACKEND={}: expected tcp or nccl", backend);
}

}  // namespace bam::tool
