// What the CUDA emulator's scheduler, GEMM and runtime (runtime.cpp) share: the sticky launch error
// that cudaGetLastError() reports, each kernel's dynamic shared memory opt-in, the held-back
// copies, and the guard check.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace bam::emu {

void set_launch_error(cudaError_t error);
// The opt-in of cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
size_t shared_limit(const void* kernel);
// Does the asynchronous copies held back so far (runtime.cpp): every launch and GEMM calls it first.
void complete_held_copies();
// Throws, naming `after`, if a device block's guard bytes were overwritten.
void check_device_guards(const std::string& after);

}  // namespace bam::emu
