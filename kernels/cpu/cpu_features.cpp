// cpu_has_avx2_fma and cpu_has_avx512 (cpu_features.h).
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

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    const char* setting = std::getenv("BAM_CPU_AVX512");
    if (setting && std::strcmp(setting, "0") == 0) return false;
    // (libgcc's check also asks the OS, through XGETBV, whether it saves the zmm registers.)
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace bam::cpu
