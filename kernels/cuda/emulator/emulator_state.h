// What the CUDA emulator's scheduler, GEMM and runtime (runtime.cpp) share: the sticky launch error
// that cudaGetLastError() reports, each kernel's dynamic shared memory opt-in, the held-back
// copies, and the guard check.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace bam::emu {

// The emulated device's limits (sm_90's, but for the SM count: a few, as blocks run one by one).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kDefaultSharedLimit = 48 * 1024;  // dynamic shared memory without the opt-in
constexpr size_t kOptInSharedLimit = 227 * 1024;   // with cudaFuncAttributeMaxDynamicSharedMemorySize
constexpr int kEmulatedSms = 4;
constexpr int kMaxThreadsPerSm = 2048;
constexpr int kMaxBlocksPerSm = 32;

void set_launch_error(cudaError_t error);
// The opt-in of cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
size_t shared_limit(const void* kernel);
// Does the asynchronous copies held back so far (runtime.cpp): every launch and GEMM calls it first.
void complete_held_copies();
// Throws, naming `after`, if a device block's guard bytes were overwritten.
void check_device_guards(const char* file, int line);

}  // namespace bam::emu
