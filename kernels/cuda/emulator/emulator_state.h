// What the CUDA emulator's scheduler and its runtime (runtime.cpp) share: the sticky launch error
// that cudaGetLastError() reports, each kernel's dynamic shared memory opt-in, and counters.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace bam::emu {

void set_launch_error(cudaError_t error);
// The opt-in of cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
size_t shared_limit(const void* kernel);
// Throws, naming `after`, if a device block's guard bytes were overwritten.
void check_device_guards(const std::string& after);

}  // namespace bam::emu
