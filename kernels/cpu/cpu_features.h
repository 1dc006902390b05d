// What the host CPU can run, checked once at run time: code compiled for AVX2/FMA (the *_avx2.cpp
// files) is only entered when this says so. BAM_CPU_AVX2=0 in the environment turns those paths
// off (the portable kernels, the specification, then run everywhere: the GEMM, GELU).
#pragma once

namespace bam::cpu {

bool cpu_has_avx2_fma();

}  // namespace bam::cpu
