// The CUDA emulator: runs this project's CUDA kernels, from their own source, on the CPU, so that
// CI (which has no GPU) executes every kernel against its CPU twin. The build rewrites each
// `kernel<<<...>>>(args)` into `kernel ^ ::bam::emu::launch(...)(args)` (translate_launches.cmake)
// and compiles the .cu files with the host compiler, with this header included first.
//
// What it models: every thread of a block is a fiber with its own stack; __syncthreads() and the
// warp-wide operations (shuffles, __syncwarp, mma.sync) suspend the fiber until the threads they
// wait for have arrived, so code that is correct on a GPU runs here unchanged. Blocks run one
// after another, launches run to completion when issued, and device memory is host memory
// (runtime.cpp). Asynchronous copies to and from page-locked memory are held back until a wait
// that covers them (runtime.cpp says which), so a buffer rewritten too early shows.
//
// What it checks, beyond the kernel's results: launch limits (block size, grid.y/z, dynamic shared
// memory above 48 KiB without the opt-in), a shuffle or mma whose mask names a thread that has
// exited or that waits elsewhere, threads stuck at different barriers (a deadlock on a GPU), races
// inside a block (blocks alternate between running their threads in index order and in reverse),
// writes past a device block, and reads of dynamic shared memory before it is written (it starts
// as NaN bytes). It does not model timing, memory ordering between blocks, the GPU's approximate
// intrinsics (__expf is expf) or fused multiply-adds, __launch_bounds__, or the static __shared__
// arrays' share of the 48 KiB. docs/04-ops-on-the-gpu.md section 5.1 walks through it.
#pragma once

// __shared__ variables are static: a block's threads share them, and blocks run one at a time.
#define __shared__ static
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define BAM_CUDA_EMULATOR 1

namespace bam::emu {

// The coordinates of the thread that is running (set by the scheduler at every switch). A plain
// aggregate, so that reading it is a direct thread-local access.
struct Coordinates {
  uint3 thread, block, block_dim, grid_dim;
};
inline thread_local Coordinates g_coordinates;

// The calling thread's lane in its warp (threads are numbered x fastest, as on the GPU).
inline unsigned lane_in_warp() {
  const Coordinates& c = g_coordinates;
  return (c.thread.x + c.block_dim.x * (c.thread.y + c.block_dim.y * c.thread.z)) % 32;
}

// Suspends the calling thread until every thread of its block that has not exited is at a
// __syncthreads().
void sync_block();

// A warp-wide operation: each thread named in `mask` calls it with its own `lane_data`; once all
// of them have, combine(lanes, mask) runs once (lanes[i] is lane i's data, nullptr outside the
// mask) and every caller continues. `what` names the operation in error reports.
using Combine = void (*)(void* const* lanes, unsigned mask);
void warp_collective(unsigned mask, const char* what, void* lane_data, Combine combine);

// The block's dynamic shared memory (extern __shared__ in CUDA): its size is the launch's.
unsigned char* dynamic_shared_memory();
#define BAM_DYNAMIC_SHARED_MEMORY(name) unsigned char* const name = ::bam::emu::dynamic_shared_memory()

struct LaunchConfig {
  const char* file;
  int line;
  dim3 grid, block;
  size_t shared_bytes;
};

// Runs body() as every thread of the grid, after checking the configuration against an H200's
// limits (and `kernel`'s dynamic shared memory opt-in). A bad configuration sets the error that
// cudaGetLastError() returns, as on a GPU; a fault inside the kernel throws, naming the launch.
void run_grid(const void* kernel, const LaunchConfig& config, const std::function<void()>& body);

template <typename... A>
struct PendingLaunch {
  LaunchConfig config;
  std::tuple<A...> args;
};
struct Launch {
  LaunchConfig config;
  template <typename... A>
  PendingLaunch<std::decay_t<A>...> operator()(A&&... args) const {
    return {config, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)};
  }
};
inline Launch launch(const char* file, int line, dim3 grid, dim3 block, size_t shared_bytes = 0,
                     cudaStream_t stream = nullptr) {
  (void)stream;  // launches run when issued
  return Launch{{file, line, grid, block, shared_bytes}};
}

// kernel ^ launch(...)(args): the translated form of kernel<<<...>>>(args). The arguments are
// converted to the kernel's parameter types once, and every thread gets its own copy.
template <typename... P, typename... A>
void operator^(void (*kernel)(P...), PendingLaunch<A...>&& pending) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launch: wrong number of arguments");
  std::tuple<std::decay_t<P>...> converted = std::apply(
      [](auto&... a) { return std::tuple<std::decay_t<P>...>(a...); }, pending.args);
  run_grid(reinterpret_cast<const void*>(kernel), pending.config, [&] {
    std::tuple<std::decay_t<P>...> own = converted;
    std::apply(kernel, own);
  });
}

// ---- warp-wide operations ---------------------------------------------------------------------

enum class ShuffleKind { index, up, down, xor_ };

struct ShuffleLane {
  uint64_t value = 0, result = 0;
  ShuffleKind kind;
  int argument, width;
};
void combine_shuffle(void* const* lanes, unsigned mask);

template <typename T>
T shuffle(unsigned mask, T value, ShuffleKind kind, int argument, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move up to 8 bytes");
  ShuffleLane lane;
  std::memcpy(&lane.value, &value, sizeof(T));
  lane.kind = kind;
  lane.argument = argument;
  lane.width = width;
  warp_collective(mask, "a warp shuffle", &lane, combine_shuffle);
  T out;
  std::memcpy(&out, &lane.result, sizeof(T));
  return out;
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: c += a b for the warp's fragments, the
// products in f32 (exact for 16-bit operands) summed in k order.
struct MmaLane {
  float* c;
  const uint32_t* a;
  const uint32_t* b;
};
void combine_mma_bf16(void* const* lanes, unsigned mask);
void combine_mma_f16(void* const* lanes, unsigned mask);

template <typename S>
void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  MmaLane lane{c, a, b};
  warp_collective(0xffffffffu, "mma.sync.m16n8k16", &lane,
                  std::is_same_v<S, __nv_bfloat16> ? combine_mma_bf16 : combine_mma_f16);
}

}  // namespace bam::emu

// ---- the CUDA built-ins, as the kernels spell them ----------------------------------------------

#define threadIdx (::bam::emu::g_coordinates.thread)
#define blockIdx (::bam::emu::g_coordinates.block)
#define blockDim (::bam::emu::g_coordinates.block_dim)
#define gridDim (::bam::emu::g_coordinates.grid_dim)
#define warpSize 32
#define __launch_bounds__(...)

// The device's overloads of the C math and integer helpers, for unqualified calls.
using std::isfinite;
using std::isinf;
using std::isnan;
// As on the device, max and min of floating-point values are fmax and fmin (a NaN operand is
// ignored); of integers, the usual comparison.
template <typename A, typename B>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) return std::fmax(C(a), C(b));
  else return a > b ? a : b;
}
template <typename A, typename B>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) return std::fmin(C(a), C(b));
  else return a < b ? a : b;
}

// The runtime's C++ overload that takes the kernel itself.
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attribute, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attribute, value);
}

inline void __syncthreads() { ::bam::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::bam::emu::warp_collective(mask, "__syncwarp", nullptr, [](void* const*, unsigned) {});
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::bam::emu::shuffle(mask, v, ::bam::emu::ShuffleKind::index, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::bam::emu::shuffle(mask, v, ::bam::emu::ShuffleKind::up, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::bam::emu::shuffle(mask, v, ::bam::emu::ShuffleKind::down, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::bam::emu::shuffle(mask, v, ::bam::emu::ShuffleKind::xor_, lane_mask, width);
}

// Threads are fibers of one host thread, and launches are serialised: a plain read-modify-write is
// atomic here. Under ThreadSanitizer (which sees each thread as its own) it is an atomic
// compare-and-swap of the value's bits, which the race checker knows is no race. (Only the atomics
// the kernels use are defined: a new one fails to compile here.)
template <typename T>
T atomicAdd(T* address, T value) {
#if defined(__SANITIZE_THREAD__)
  using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
  static_assert(sizeof(T) == sizeof(Bits));
  auto* bits = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    T old, sum;
    std::memcpy(&old, &expected, sizeof(T));
    sum = old + value;
    Bits desired;
    std::memcpy(&desired, &sum, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return old;
  }
#else
  T old = *address;
  *address = old + value;
  return old;
#endif
}

// The device's intrinsics the kernels use, exactly rounded here (the GPU's __expf is an
// approximation).
inline float __expf(float x) { return std::exp(x); }

#include "kernels/cuda/emulator/wmma.h"
