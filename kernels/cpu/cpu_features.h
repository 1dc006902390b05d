// What the host CPU can run, checked once at run time: code compiled for AVX2/FMA or AVX-512 (the
// *_avx2.cpp and *_avx512.cpp files) is only entered when this says so. BAM_CPU_AVX2=0 in the environment turns those paths
// off (the portable kernels, the specification, then run everywhere: the GEMM, GELU).
#pragma once

namespace bam::cpu {

bool cpu_has_avx2_fma();
// AVX-512F on top of AVX2/FMA (the *_avx512.cpp files), with the OS saving the wide registers.
// BAM_CPU_AVX512=0 turns it off (and BAM_CPU_AVX2=0 with it).
bool cpu_has_avx512();
// AVX-512 BF16 and BW on top of AVX-512F (the *_avx512bf16.cpp files: the bf16 GEMM's packing and
// its pair dot products, VDPBF16PS). AMD has them from Zen 4 on, Intel from Cooper Lake.
// BAM_CPU_AVX512BF16=0 turns it off (and AMX with it, whose packing needs it).
bool cpu_has_avx512_bf16();
// Intel AMX with bf16 tiles, on top of AVX-512 BF16, with Linux's permission to use the tiles
// obtained for this process (the *_amx.cpp files). BAM_CPU_AMX=0 turns it off.
bool cpu_has_amx_bf16();

}  // namespace bam::cpu
