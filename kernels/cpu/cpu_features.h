// What the host CPU can run, checked once at run time: code compiled for AVX2/FMA or AVX-512 (the
// *_avx2.cpp and *_avx512.cpp files) is only entered when this says so. BAM_CPU_AVX2=0 in the environment turns those paths
// off (the portable kernels, the specification, then run everywhere: the GEMM, GELU).
#pragma once

namespace bam::cpu {

bool cpu_has_avx2_fma();
// AVX-512F on top of AVX2/FMA (the *_avx512.cpp files), with the OS saving the wide registers.
// BAM_CPU_AVX512=0 turns it off (and BAM_CPU_AVX2=0 with it).
bool cpu_has_avx512();
// Intel AMX with bf16 tiles (and AVX-512 BF16/BW for the packing), with Linux's permission to use
// the tiles obtained for this process (the *_amx.cpp files). BAM_CPU_AMX=0 turns it off.
bool cpu_has_amx_bf16();

}  // namespace bam::cpu
