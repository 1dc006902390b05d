// Helpers shared by the GPU data-path suites (the CPU suite with the kernels' host emulators, and
// the GPU suite with the kernels themselves): a small corpus of in-memory image files made with
// stb_image_write (so the GPU machine needs no libjpeg tools), a batch prepared as the GPU loader
// prepares it, the CPU reference crops, and the comparison of crops.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/gpu_batch_plan.h"

namespace bam::test {

struct ImageFile {
  std::string name;
  std::vector<uint8_t> bytes;
};

// JPEGs at 4:2:0 (quality <= 90) and 4:4:4 (quality > 90), grayscale, odd and tiny sizes, a
// 500x375 quality-90 photo-like image, and a PNG (which the GPU path takes as pixels).
std::vector<ImageFile> gpu_test_corpus(uint64_t seed);

// The chroma samplings and colour space stb does not write: cjpeg's 4:2:2 (h2v1), 4:4:0 (h1v2)
// and RGB JPEGs of 181x127, committed under tests/data (see its README) so that the GPU machine,
// which has no libjpeg tools, reads the same files.
std::vector<ImageFile> cjpeg_fixtures();

// The corpus above with those fixtures appended.
std::vector<ImageFile> gpu_test_corpus_with_fixtures(uint64_t seed);

// The training recipe of the benchmarks: 2 global crops (224, scale 0.25-1) and 6 local (96).
data::AugmentRecipe multi_crop_test_recipe();

// prepare_image_for_gpu on an in-memory file, its coefficients (when it goes to the GPU) into
// *coefficients, its CPU-decoded pixels (when it does not) into *pixels.
data::GpuBatchImage prepare_file_for_gpu(const std::vector<uint8_t>& bytes, const std::string& name,
                                         std::vector<int16_t>* coefficients, data::DecodedImage* pixels,
                                         std::vector<std::string>* warnings = nullptr);

// One batch as the GPU loader prepares it on the host.
struct HostBatch {
  data::AugmentRecipe recipe;
  std::vector<data::GpuBatchImage> images;
  std::vector<data::DecodedImage> fallback;  // per image; pixels only where !decode_on_gpu
  std::vector<int16_t> coefficients;         // all decode_on_gpu images, at their coef_offset
  std::vector<data::DecodedImage> reference;  // every image decoded by the CPU path
  std::vector<int> sizes;
  std::vector<std::vector<data::GpuBatchCrop>> crops;
  data::GpuBatchPlan plan;
  bool eval = false;
  uint64_t seed = 0;
  uint32_t epoch = 5;  // dataset index of image b is 7 * b + 3
};

// eval: the evaluation transform at recipe.global_size; else the multi-crop recipe.
HostBatch prepare_host_batch(const std::vector<ImageFile>& files, const data::AugmentRecipe& recipe, uint64_t seed,
                             bool eval);

// The CPU path's crops of each group, [count, 3, S, S] as the GPU path lays them out.
std::vector<std::vector<float>> reference_crops(const HostBatch& batch);

// Writes the fallback images' pixels at their RGB offsets (the upload of CPU-decoded images).
void place_fallback_pixels(const HostBatch& batch, uint8_t* rgb);

struct CropComparison {
  size_t values = 0;
  size_t beyond = 0;  // |difference| > 1e-3 (normalised units; one grey level is about 0.017)
  double max_abs = 0;
};
CropComparison compare_crops(const std::vector<float>& expected, const std::vector<float>& actual);

}  // namespace bam::test
