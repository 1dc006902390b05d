// BAM_CUDA_CHECK(call) and BAM_CUDA_CHECK_LAUNCH(): turn CUDA errors into bam::Error naming
// the call and file:line. Only for files built with the CUDA backend.
#pragma once

#include <cuda_runtime_api.h>

#include "engine/error.h"

// A failed call's error is cleared before the throw (a sticky one cannot be and stays), so that
// code which catches the error does not see it again at the next, unrelated launch check.
#define BAM_CUDA_CHECK(call)                                                                       \
  do {                                                                                             \
    cudaError_t bam_cuda_status = (call);                                                          \
    if (bam_cuda_status != cudaSuccess) {                                                          \
      (void)cudaGetLastError();                                                                    \
      ::bam::fail("CUDA error '{}' ({}) from {} at {}:{}", cudaGetErrorString(bam_cuda_status),    \
                  static_cast<int>(bam_cuda_status), #call, __FILE__, __LINE__);                   \
    }                                                                                              \
  } while (0)

// After a kernel launch: reports bad launch configurations at the launch site.
#define BAM_CUDA_CHECK_LAUNCH() BAM_CUDA_CHECK(cudaGetLastError())
