// cpu_has_avx2_fma (cpu_features.h).
#include "kernels/cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace bam::cpu {

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    const char* setting = std::getenv("BAM_CPU_AVX2");
    if (setting && std::strcmp(setting, "0") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace bam::cpu
