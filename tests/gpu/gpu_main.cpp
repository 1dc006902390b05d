// The entry point of the GPU suites: with no usable CUDA device it says why and exits 77, which
// ctest reports as "Skipped" (visibly, not as a pass). Otherwise new device memory is poisoned
// (BAM_CUDA_POISON=1) and doctest runs the suites.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>
#include <cstdlib>

#include "engine/cuda.h"
#include "tests/doctest_text.h"

int main(int argc, char** argv) {
  if (!bam::cuda::is_available()) {
    std::printf("SKIPPED: the GPU suites need a CUDA device: %s\n", bam::cuda::unavailable_reason().c_str());
    return 77;
  }
  setenv("BAM_CUDA_POISON", "1", 0);
  std::printf("GPU suites on %s\n", bam::cuda::device_description(0).c_str());
  doctest::Context context(argc, argv);
  return context.run();
}
