// BAM_HD marks small pure functions that both the CPU code and CUDA kernels call, so that a kernel
// and its CPU specification share one definition of the arithmetic (compiled by nvcc it is
// __host__ __device__; by the host compiler, plain inline).
#pragma once

#if defined(__CUDACC__)
#define BAM_HD __host__ __device__ __forceinline__
#else
#define BAM_HD inline
#endif

// Unrolls the next loop in device code (loops over register arrays must unroll to stay in
// registers); nothing in host code, whose compiler does not know the pragma.
#if defined(__CUDA_ARCH__)
#define BAM_UNROLL _Pragma("unroll")
#else
#define BAM_UNROLL
#endif
