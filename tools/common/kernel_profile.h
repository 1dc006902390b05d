// A kernel-level profile of GPU work, for `bamtool bench-step --profile`: every kernel, copy and
// memset the device ran between start() and stop(), timed by the device itself (CUPTI's activity
// records), grouped by kernel name. CUPTI is loaded at run time (dlopen), so the tools need it
// only when a profile is asked for; without it, start() says why and the profile stays empty.
#pragma once

#include <string>
#include <vector>

namespace bam::tool {

struct KernelTime {
  std::string name;  // demangled, without the namespaces and the parameter list
  long long calls = 0;
  double total_ms = 0;
};

class KernelProfile {
 public:
  // Begins recording; false (with the reason in *why) when CUPTI cannot be loaded or enabled.
  bool start(std::string* why);
  // Waits for the device, stops recording and returns the kernels sorted by total time.
  std::vector<KernelTime> stop();
};

// Prints the `top` longest kernels as a markdown table, with each one's share of the GPU time,
// time per step (`steps` profiled steps), and the GPU-busy fraction of `wall_ms_per_step`.
void print_kernel_profile(const std::vector<KernelTime>& kernels, int steps, double wall_ms_per_step, int top);

}  // namespace bam::tool
