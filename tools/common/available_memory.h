// How much host memory a tool may still take, so that it can refuse (or leave out) work whose
// buffers would not fit before it starts, instead of being killed by the kernel half-way through.
// The environment variable BAM_AVAILABLE_MEMORY_MIB overrides what the system reports (tests set
// it; a user can set it to keep a tool within a share of a shared machine).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace bam::tool {

// Bytes available: BAM_AVAILABLE_MEMORY_MIB when set, else Linux's MemAvailable (/proc/meminfo),
// else 0, which means unknown.
inline int64_t available_memory_bytes() {
  if (const char* limit = std::getenv("BAM_AVAILABLE_MEMORY_MIB"); limit && *limit)
    return static_cast<int64_t>(std::atof(limit) * 1048576.0);
  std::ifstream meminfo("/proc/meminfo");  // lines "Name:   value [kB]"
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemAvailable:", 0) == 0) return std::atoll(line.c_str() + 13) * 1024;
  }
  return 0;
}

// Whether `bytes` of buffers fit in what is available, keeping a fifth of it for everything else
// (the model, the loader's buffers, the allocator's slack). Unknown availability fits.
inline bool fits_in_memory(int64_t bytes, int64_t available) { return available <= 0 || bytes <= available / 5 * 4; }

// "39.3 GiB", "4.5 MiB", "30.0 KiB": a size for a message.
inline std::string memory_text(int64_t bytes) {
  const double kib = static_cast<double>(bytes) / 1024.0;
  if (kib >= 1048576) return fmt::format("{:.1f} GiB", kib / 1048576);
  return kib >= 1024 ? fmt::format("{:.1f} MiB", kib / 1024) : fmt::format("{:.1f} KiB", kib);
}

}  // namespace bam::tool
