// Helpers shared by the GPU data-path suites (the CPU suite with the kernels' host emulators, and
// the GPU suite with the kernels themselves): a small corpus of in-memory image files made with
// stb_image_write (so the GPU machine needs no libjpeg tools), a batch prepared as the GPU loader
// prepares it, the CPU reference crops, and the comparison of crops.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/gpu_batch_plan.h"

namespace bam::test {

struct ImageFile {
  std::string name;
  std::vector<uint8_t> bytes;
};

// A synthetic photo-like image of w x h (1 or 3 channels) as a JPEG of `quality` (stb: 4:2:0 up
// to 90, 4:4:4 above), or as a PNG.
ImageFile encode(const std::string& name, int w, int h, int channels, int quality, uint64_t seed, bool png = false);

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
  std::vector<data::DecodedImage> fallback;   // per image; pixels only where !decode_on_gpu
  std::vector<int16_t> coefficients;          // all decode_on_gpu images, at their coef_offset
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

// The values of GPU-decoded image i's rectangle in the batch's RGB buffer `rgb` that differ from
// the CPU decode (bit for bit); *checked, when given, gets how many were compared.
size_t decode_mismatches(const HostBatch& batch, size_t i, const std::vector<uint8_t>& rgb, size_t* checked = nullptr);

// Writes the fallback images' pixels at their RGB offsets (the upload of CPU-decoded images).
void place_fallback_pixels(const HostBatch& batch, uint8_t* rgb);

struct CropComparison {
  size_t values = 0;
  size_t beyond = 0;  // |difference| > 1e-3 (normalised units; one grey level is about 0.017)
  double max_abs = 0;
};
CropComparison compare_crops(const std::vector<float>& expected, const std::vector<float>& actual);

// Every task of the plan stays inside the buffers the loader sizes from it (the images'
// coefficients, plan.plane_bytes, plan.rgb_bytes) and inside its component's block grid: what an
// index bug in the plan would make a kernel overrun on the GPU. Returns false (after reporting) on
// the first task outside, so that no kernel is run on a plan that would overrun.
bool plan_in_bounds(const HostBatch& b);

// One random change to a baseline JPEG, described in *what (mutate_jpeg in the .cpp lists them).
std::vector<uint8_t> mutate_jpeg(const std::vector<uint8_t>& jpeg, std::mt19937_64& rng, std::string* what);
// A recipe a user could ask for, drawn at random; describe() puts it in words.
data::AugmentRecipe random_recipe(std::mt19937_64& rng);
std::string describe(const data::AugmentRecipe& recipe);

// Batches of damaged and unusual JPEGs for the GPU path. `trials` random mutations of the corpus's
// JPEGs are prepared one by one: a file the GPU path refuses must be refused by decode_image too
// (both loaders skip it); the files it takes go in batches of up to 6, each with the corpus's PNG,
// a CPU-decoded mutant where there is one, and a random recipe. At least a third must be taken.
// Batch k has the same files and recipe for any trial count that reaches it (the last, partial
// batch and a CPU-decoded mutant only a longer run reaches aside).
struct MutatedBatch {
  std::vector<ImageFile> files;
  data::AugmentRecipe recipe;
  data::AugmentRecipe eval_recipe;  // the same with the evaluation side capped at 64 (a 1 x N image's
                                    // evaluation resize would otherwise take gigabytes on the host)
  std::string description;          // the recipe and the files' mutations, for failure messages
};
std::vector<MutatedBatch> mutated_batches(uint64_t seed, int trials);

// The values of a group of crops [count, 3, S, S] (normalised with `recipe`) that differ from the
// CPU's by more than `tolerance`, in three kinds: not finite (an output never written: the tests
// poison it with NaN), solarisation crossings, and the rest. A crossing is a value of a blurred,
// solarised crop that a last-bit difference in the blur (the device's expf against the host's)
// left just below 128 grey levels on one side and at or above it on the other: solarising turns
// v >= 128 into 255 - v, so the outputs end just under 128 and just under 127, summing to 255.
// Flat regions at 128 (blocks of damaged scans decode to them) cross together. Any other
// difference, of any size, in any other crop, counts as the rest.
struct CropDifferences {
  size_t not_finite = 0, solarize_crossings = 0, beyond = 0;
};
CropDifferences crop_differences(const std::vector<float>& expected, const std::vector<float>& actual,
                                 const data::GpuCropGroup& group, const data::AugmentRecipe& recipe, double tolerance);

// A group of `count` crops made of copies of a few of a batch's crops (those `distinct` of group
// `g` that read the fewest source rows, so that a large count stays cheap), each copy with its own
// output row and scratch. For the crop kernels' launch over many crops: copy i must render as
// copy i % distinct does, and the first `distinct` as the CPU does.
struct RepeatedCrops {
  data::AugmentRecipe recipe;
  data::GpuCropGroup distinct;   // the chosen crops, output rows 0..distinct-1
  std::vector<float> expected;   // the CPU's crops of `distinct`, [distinct, 3, S, S]
  std::vector<cuda_kernels::CropTask> tasks;  // count tasks, copy i of distinct.crops[i % distinct]
  int max_rows = 0;
  int64_t scratch_floats = 0;    // what the count crops need (CropScratch)
  std::vector<uint8_t> rgb;      // the batch's images as the CPU decodes them, at the plan's offsets
};
RepeatedCrops repeated_crops(const HostBatch& batch, size_t g, int distinct, int count);
// The test corpus's batch under the multi-crop recipe with 8 px local crops, and `count` copies of
// its 4 cheapest local crops.
RepeatedCrops repeated_local_crops(uint64_t seed, int count);

// Counts a repeated group's values left unwritten (not finite) and copies that differ from their
// first copy (bit for bit); the first copies' differences from the CPU go to *first.
struct RepeatedCropsCheck {
  size_t not_finite = 0, unequal = 0;
  CropDifferences first;
};
RepeatedCropsCheck check_repeated_crops(const RepeatedCrops& r, const std::vector<float>& actual);

}  // namespace bam::test
