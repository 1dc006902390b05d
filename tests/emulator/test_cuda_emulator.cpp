// The CUDA emulator (kernels/cuda/emulator) runs correct kernels correctly and reports the faults
// it promises to: shuffles naming exited or blocked lanes, a race inside a block, bad launch shapes,
// dynamic shared memory without its opt-in, writes and copies past a device block. Only in
// bam_gpu_tests_emulated.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "engine/error.h"
#include "tests/doctest_text.h"
#include "tests/emulator/emulator_checks.h"

namespace bam {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAddressSanitizer = true;
#else
constexpr bool kUnderAddressSanitizer = false;
#endif
#if defined(__SANITIZE_THREAD__)
constexpr bool kUnderThreadSanitizer = true;
#else
constexpr bool kUnderThreadSanitizer = false;
#endif

struct DeviceFloats {
  float* ptr = nullptr;
  explicit DeviceFloats(size_t n) { REQUIRE(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(float)) == 0); }
  ~DeviceFloats() { cudaFree(ptr); }
};

// Device memory here is host memory: the tests read it directly.
std::string fault_of(const std::function<void()>& launch) {
  try {
    launch();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the CUDA emulator runs shuffles and block barriers as a GPU does") {
  const int threads = 128;
  DeviceFloats in(threads), sums(threads / 32), rotated(threads), up(threads), total(1);
  for (int t = 0; t < threads; ++t) in.ptr[t] = float(t);
  emulator_checks::warp_shuffles(in.ptr, sums.ptr, rotated.ptr, up.ptr, threads);
  for (int w = 0; w < threads / 32; ++w) CHECK(sums.ptr[w] == float(32 * 32 * w + 31 * 32 / 2));
  for (int t = 0; t < threads; ++t) {
    CHECK(rotated.ptr[t] == float(t / 32 * 32 + (t + 1) % 32));
    CHECK(up.ptr[t] == float(t % 32 == 0 ? t : t - 1));
  }
  std::vector<float> values(1000);
  std::iota(values.begin(), values.end(), 1.0f);
  DeviceFloats many(values.size());
  std::copy(values.begin(), values.end(), many.ptr);
  emulator_checks::block_sum(many.ptr, total.ptr, 1000, 256);
  CHECK(total.ptr[0] == 500500.0f);  // a missing barrier would leave partial sums out
}

TEST_CASE("the CUDA emulator runs separate shuffle groups in one warp, and shows a race in one of two orders") {
  DeviceFloats in(32), out(32), racy(128);
  for (int t = 0; t < 32; ++t) in.ptr[t] = float(t);
  emulator_checks::half_warp_shuffles(in.ptr, out.ptr);
  for (int t = 0; t < 32; ++t) CHECK(out.ptr[t] == float(t ^ 1));
  // Twice: the launches alternate the thread order.
  for (int launch = 0; launch < 2; ++launch) {
    emulator_checks::interleaved_groups(out.ptr);
    for (int t = 0; t < 32; ++t) CHECK(out.ptr[t] == float(t < 16 ? (t + 16) ^ 1 : t - 16));
  }
  // The two blocks run their threads in opposite orders: in one, thread 0 writes first and the
  // race is invisible; in the other, the readers come first and find the unwritten (NaN) value.
  if (kUnderThreadSanitizer) {
    MESSAGE("the racy kernel is left out: ThreadSanitizer reports it (emulated_sanitizer_sees_race)");
    return;
  }
  emulator_checks::racy_broadcast(racy.ptr);
  int unwritten = 0;
  for (int i = 0; i < 128; ++i) unwritten += std::isnan(racy.ptr[i]);
  CHECK(unwritten == 63);
}

TEST_CASE("the CUDA emulator reports a shuffle that names an exited lane or one at a barrier") {
  DeviceFloats out(64);
  const std::string exited = fault_of([&] { emulator_checks::shuffle_with_exited_lane(out.ptr); });
  CHECK(exited.find("a thread that has exited") != std::string::npos);
  CHECK(exited.find("emulator_checks.cu") != std::string::npos);  // the launch site
  const std::string blocked = fault_of([&] { emulator_checks::barrier_against_shuffle(out.ptr); });
  CHECK(blocked.find("waiting at __syncthreads()") != std::string::npos);
}

TEST_CASE("the CUDA emulator refuses launches a GPU refuses, with the error cudaGetLastError returns") {
  DeviceFloats out(1);
  emulator_checks::launch_shape(32, 1, 65535, out.ptr);
  CHECK(out.ptr[0] == 65535.0f);
  const std::string too_wide = fault_of([&] { emulator_checks::launch_shape(1025, 1, 1, out.ptr); });
  CHECK(too_wide.find("invalid configuration") != std::string::npos);
  const std::string too_tall = fault_of([&] { emulator_checks::launch_shape(32, 1, 65536, out.ptr); });
  CHECK(too_tall.find("invalid configuration") != std::string::npos);

  emulator_checks::dynamic_shared(40 * 1024, false, out.ptr);
  CHECK(out.ptr[0] == float(10 * 1024 - 1));
  const std::string no_opt_in = fault_of([&] { emulator_checks::dynamic_shared(64 * 1024, false, out.ptr); });
  CHECK(no_opt_in.find("invalid argument") != std::string::npos);
  emulator_checks::dynamic_shared(64 * 1024, true, out.ptr);
  CHECK(out.ptr[0] == float(16 * 1024 - 1));
  CHECK(cudaGetLastError() == cudaSuccess);
}

TEST_CASE("the CUDA emulator names a kernel that writes past the end of a device block") {
  DeviceFloats out(100);
  emulator_checks::write_elements(out.ptr, 100, false);
  if (kUnderAddressSanitizer) {
    // The bytes around a device block are unaddressable: the write below would stop the run
    // where it happens, with the kernel's line (scripts/sanitize.sh --emulator).
    MESSAGE("the write past the block is left out: AddressSanitizer reports it itself");
  } else {
    const std::string past = fault_of([&] { emulator_checks::write_elements(out.ptr, 100, true); });
    CHECK(past.find("wrote outside a device block of 400 bytes") != std::string::npos);
    CHECK(past.find("emulator_checks.cu") != std::string::npos);
    emulator_checks::write_elements(out.ptr, 100, false);  // reported once: the next launch is clean
  }
  // A copy whose device side runs past the block is refused, as an invalid argument.
  std::vector<float> host(20, 1.0f);
  CHECK(cudaMemcpy(out.ptr + 90, host.data(), 20 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(out.ptr + 80, host.data(), 20 * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemset(host.data(), 0, 4) == cudaErrorInvalidValue);  // host memory is not a device block
}

// Run by the sanitizer builds' own tests (tests/CMakeLists.txt), which expect the report this
// faulty kernel causes: BAM_EMULATOR_SANITIZER_DEMO=read reads one float past a device block
// (AddressSanitizer stops there), =race runs a kernel with a race inside a block (ThreadSanitizer
// reports it). Without the variable, nothing runs.
TEST_CASE("under a sanitizer, a kernel's read past a device block, or its race, is reported") {
  const char* demo = std::getenv("BAM_EMULATOR_SANITIZER_DEMO");
  if (!demo) {
    MESSAGE("run by scripts/sanitize.sh --emulator and --emulator-races only");
    return;
  }
  const std::string which = demo;
  if (which == "read") {
    DeviceFloats in(100), out(101);
    emulator_checks::copy_elements(in.ptr, out.ptr, 100, true);
    FAIL("the read past the device block was not reported");
  } else if (which == "race") {
    DeviceFloats racy(128);
    emulator_checks::racy_broadcast(racy.ptr);
  } else {
    FAIL("BAM_EMULATOR_SANITIZER_DEMO=" << which << ": expected read or race");
  }
}

TEST_CASE("the CUDA emulator holds an asynchronous copy from page-locked memory back until a call must see it") {
  DeviceFloats device(4);
  float* pinned = nullptr;
  REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), 4 * sizeof(float)) == cudaSuccess);
  cudaStream_t stream;
  cudaEvent_t event;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaEventCreate(&event) == cudaSuccess);
  cudaStream_t other;
  REQUIRE(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaMemset(device.ptr, 0, 4 * sizeof(float)) == cudaSuccess);
  // Rewriting the buffer before waiting is a bug a busy GPU shows: the copy reads the new values.
  REQUIRE(cudaEventRecord(event, stream) == cudaSuccess);  // before the copy
  std::fill(pinned, pinned + 4, 1.0f);
  REQUIRE(cudaMemcpyAsync(device.ptr, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, stream) == cudaSuccess);
  CHECK(device.ptr[0] == 0.0f);  // held back
  REQUIRE(cudaEventSynchronize(event) == cudaSuccess);
  CHECK(device.ptr[0] == 0.0f);  // an event recorded before the copy does not cover it
  REQUIRE(cudaStreamSynchronize(other) == cudaSuccess);
  CHECK(device.ptr[0] == 0.0f);  // nor does another (non-blocking) stream's synchronize
  REQUIRE(cudaEventRecord(event, stream) == cudaSuccess);
  CHECK(device.ptr[0] == 0.0f);  // recording an event does not complete it
  std::fill(pinned, pinned + 4, 2.0f);
  REQUIRE(cudaEventSynchronize(event) == cudaSuccess);
  CHECK(device.ptr[3] == 2.0f);
  // A launch completes it before the kernel runs; so does a copy from pageable memory, in order.
  std::fill(pinned, pinned + 4, 3.0f);
  REQUIRE(cudaMemcpyAsync(device.ptr, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, stream) == cudaSuccess);
  emulator_checks::write_elements(device.ptr, 2, false);
  CHECK(device.ptr[3] == 3.0f);
  std::vector<float> pageable(4, 4.0f);
  REQUIRE(cudaMemcpyAsync(device.ptr, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, stream) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(device.ptr, pageable.data(), 4 * sizeof(float), cudaMemcpyHostToDevice, stream) == 0);
  CHECK(device.ptr[0] == 4.0f);  // done at once, after the held copy
  // A copy into page-locked memory is held too: read it only after a wait.
  std::fill(pinned, pinned + 4, 0.0f);
  REQUIRE(cudaMemcpyAsync(pinned, device.ptr, 4 * sizeof(float), cudaMemcpyDeviceToHost, stream) == cudaSuccess);
  CHECK(pinned[0] == 0.0f);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(pinned[0] == 4.0f);
  cudaEventDestroy(event);
  cudaStreamDestroy(stream);
  cudaStreamDestroy(other);
  cudaFreeHost(pinned);
}

}  // namespace bam
