// What the host CPU can run, checked once at run time: code compiled for AVX2/FMA (the *_avx2.cpp
// files) is only entered when this says so.
#pragma once

namespace bam::cpu {

bool cpu_has_avx2_fma();

}  // namespace bam::cpu
