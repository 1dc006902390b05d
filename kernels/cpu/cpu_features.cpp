// cpu_has_avx2_fma, cpu_has_avx512, cpu_has_avx512_bf16 and cpu_has_amx_bf16 (cpu_features.h).
#include "kernels/cpu/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace bam::cpu {
namespace {

// Whether the environment variable says "0": the switch that turns a path off.
bool turned_off(const char* variable) {
  const char* setting = std::getenv(variable);
  return setting && std::strcmp(setting, "0") == 0;
}

}  // namespace

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    if (turned_off("BAM_CPU_AVX2")) return false;
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
    if (turned_off("BAM_CPU_AVX512")) return false;
    // (libgcc's check also asks the OS, through XGETBV, whether it saves the zmm registers.)
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
  }();
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) && !defined(BAM_NO_AVX512BF16)
  static const bool has = [] {
    if (turned_off("BAM_CPU_AVX512BF16")) return false;
    if (!cpu_has_avx512()) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool avx512bw = (b >> 30) & 1u;
    if (a < 1) return false;  // (EAX of subleaf 0: the last subleaf of leaf 7)
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
    const bool avx512_bf16 = (a >> 5) & 1u;
    return avx512bw && avx512_bf16;
  }();
  return has;
#else
  return false;
#endif
}

bool cpu_has_amx_bf16() {
#if defined(__x86_64__) && defined(__linux__) && !defined(BAM_NO_AMX)
  static const bool has = [] {
    if (turned_off("BAM_CPU_AMX")) return false;
    if (!cpu_has_avx512_bf16()) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
    if (!(amx_bf16 && amx_tile)) return false;
    // The OS must save the tile state (XCR0 bits 17 and 18) ...
    uint32_t xcr0_low = 0, xcr0_high = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    if (((xcr0_low >> 17) & 3u) != 3u) return false;
    // ... and Linux hands the 8 KiB of tile data to a process only when it asks for it
    // (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; once per process, for all threads).
    constexpr long kRequestPermission = 0x1023, kTileData = 18;
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace bam::cpu
