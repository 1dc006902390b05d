// Small kernels that exercise the CUDA emulator itself (tests/emulator/test_cuda_emulator.cpp):
// warp shuffles, block barriers, and the faults it must report. Device pointers throughout.
#pragma once

#include <cstddef>

namespace bam::emulator_checks {

// out[w] = the sum of in over warp w's 32 lanes, by __shfl_xor_sync; out2[t] = in of lane
// (t + 1) % 32 by __shfl_sync, out3[t] = in of lane t - 1 by __shfl_up_sync (own value at lane 0).
void warp_shuffles(const float* in, float* sums, float* rotated, float* up, int threads);
// out[0] = the sum of in[0..n) by one block of `threads` threads: shared memory, __syncthreads().
void block_sum(const float* in, float* out, int n, int threads);
// Threads of warp 0 shuffle with a full mask while lane 31 has returned.
void shuffle_with_exited_lane(float* out);
// In each warp, lanes 0-15 shuffle with a full mask while lanes 16-31 wait at __syncthreads():
// a deadlock on a GPU.
void barrier_against_shuffle(float* out);
// A launch of `threads` threads per block and grid (x, y).
void launch_shape(int threads, unsigned grid_x, unsigned grid_y, float* out);
// A kernel with `bytes` of dynamic shared memory, with or without the opt-in above 48 KiB.
void dynamic_shared(size_t bytes, bool opt_in, float* out);
// Half-warps shuffle apart (masks 0x0000ffff and 0xffff0000, width 16): out[t] = in[t ^ 1].
void half_warp_shuffles(const float* in, float* out);
// Lanes 16-31 first shuffle among themselves (mask 0xffff0000, pairs t ^ 1), then the whole warp
// shuffles (t ^ 16): the half-warp group must complete while lanes 0-15 wait at the full one.
// out[t] = (t + 16) ^ 1 for t < 16, t - 16 above.
void interleaved_groups(float* out);
// Thread 0 writes a shared value that every thread of the block reads, with no barrier between:
// a race. Two blocks of 64 threads; out[b * 64 + t] is what thread t of block b read.
void racy_broadcast(float* out);
// Writes out[0..n] (one past the end when asked to).
void write_elements(float* out, int n, bool one_past_the_end);
// Copies in[0..n] to out[0..n] (reading and writing one past the end when asked to).
void copy_elements(const float* in, float* out, int n, bool one_past_the_end);

}  // namespace bam::emulator_checks
