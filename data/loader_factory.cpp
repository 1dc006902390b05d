// make_crop_loader: the CPU loader, or the GPU path when the build and the machine have CUDA.
#include "data/loader.h"
#include "engine/cuda.h"
#include "engine/error.h"
#ifdef BAM_WITH_CUDA
#include "data/gpu_loader.h"
#endif

namespace bam::data {

const char* data_backend_name(DataBackend backend) { return backend == DataBackend::gpu ? "gpu" : "cpu"; }

std::unique_ptr<CropLoader> make_crop_loader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size, uint64_t seed,
                                             LoaderOptions options) {
  if (options.backend == DataBackend::cpu)
    return std::make_unique<MultiCropLoader>(std::move(dataset), recipe, batch_size, seed, options);
#ifdef BAM_WITH_CUDA
  BAM_CHECK(cuda::is_available(), "--data_backend gpu: no usable CUDA device ({})", cuda::unavailable_reason());
  return std::make_unique<GpuCropLoader>(std::move(dataset), recipe, batch_size, seed, options);
#else
  fail("--data_backend gpu: this build has no CUDA backend (configure with nvcc available, or use --data_backend cpu)");
#endif
}

}  // namespace bam::data
