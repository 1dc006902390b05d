// The GPU data path on a device: the batched decode kernels against the CPU decode (bit for bit
// inside the crop rectangles), the crop kernels against render_crop / render_eval, and the whole
// GpuCropLoader against MultiCropLoader on a folder with damaged files mixed in.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "bam/contrastive_crop.h"
#include "bam/features.h"
#include "data/gpu_loader.h"
#include "data/loader.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/cuda/crop_batch.h"
#include "kernels/cuda/jpeg_batch.h"
#include "tests/doctest_text.h"
#include "tests/gpu_batch_support.h"
#include "tests/jpeg_test_support.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {

// A device buffer holding a copy of `host` (or `bytes` of poison when host is empty).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n, int poison = 0x7F) : bytes(std::max<size_t>(n, 16)) {
    REQUIRE(cudaMalloc(&ptr, bytes) == cudaSuccess);
    REQUIRE(cudaMemset(ptr, poison, bytes) == cudaSuccess);
  }
  template <typename T>
  static DeviceBuffer from(const std::vector<T>& host) {
    DeviceBuffer d(host.size() * sizeof(T));
    if (!host.empty()) REQUIRE(cudaMemcpy(d.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) == 0);
    return d;
  }
  template <typename T>
  std::vector<T> to_host(size_t count) const {
    std::vector<T> out(count);
    REQUIRE(cudaMemcpy(out.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
};

// One batch through the device kernels (a plan checked in bounds first): the decode equals the CPU
// decode bit for bit inside the rectangles, and the crops equal render_crop / render_eval.
void check_device_batch(const std::vector<ImageFile>& files, const data::AugmentRecipe& recipe, uint64_t seed,
                        bool eval, DType out_dtype, bool quiet = false) {
  HostBatch b = prepare_host_batch(files, recipe, seed, eval);
  REQUIRE(plan_in_bounds(b));
  DeviceBuffer coefficients = DeviceBuffer::from(b.coefficients);
  DeviceBuffer block_tasks = DeviceBuffer::from(b.plan.block_tasks);
  DeviceBuffer pixel_tasks = DeviceBuffer::from(b.plan.pixel_tasks);
  DeviceBuffer planes(b.plan.plane_bytes, 0xA5);
  std::vector<uint8_t> rgb_host(b.plan.rgb_bytes, 0x5A);
  place_fallback_pixels(b, rgb_host.data());
  DeviceBuffer rgb = DeviceBuffer::from(rgb_host);
  cuda_kernels::jpeg_idct_batch(
      static_cast<const cuda_kernels::JpegBlockTask*>(block_tasks.ptr), static_cast<int>(b.plan.block_tasks.size()),
      b.plan.total_blocks, static_cast<const int16_t*>(coefficients.ptr), static_cast<uint8_t*>(planes.ptr), nullptr);
  cuda_kernels::jpeg_upsample_convert_batch(
      static_cast<const cuda_kernels::JpegPixelTask*>(pixel_tasks.ptr), static_cast<int>(b.plan.pixel_tasks.size()),
      b.plan.total_pixels, static_cast<const uint8_t*>(planes.ptr), static_cast<uint8_t*>(rgb.ptr), nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<uint8_t> decoded = rgb.to_host<uint8_t>(b.plan.rgb_bytes);
  for (size_t i = 0; i < b.images.size(); ++i) {
    if (!b.images[i].decode_on_gpu) continue;
    const size_t mismatches = decode_mismatches(b, i, decoded);
    INFO(files[i].name);
    CHECK(mismatches == 0);
  }
  std::vector<std::vector<float>> expected = reference_crops(b);
  for (size_t g = 0; g < b.plan.groups.size(); ++g) {
    const data::GpuCropGroup& group = b.plan.groups[g];
    const int S = group.S, count = static_cast<int>(group.crops.size());
    DeviceBuffer tasks = DeviceBuffer::from(group.crops);
    DeviceBuffer scratch(group.scratch_floats * 4), pixels(group.pixel_floats * 4), row_sums(size_t(count) * S * 8),
        means(size_t(count) * 4);
    const size_t n = size_t(count) * 3 * S * S;
    DeviceBuffer out(n * dtype_size(out_dtype), 0xFF);
    cuda_kernels::crop_batch_render(static_cast<const cuda_kernels::CropTask*>(tasks.ptr), count, S, group.max_rows,
                                    static_cast<const uint8_t*>(rgb.ptr), data::crop_normalize(recipe),
                                    {static_cast<float*>(scratch.ptr), static_cast<float*>(pixels.ptr),
                                     static_cast<double*>(row_sums.ptr), static_cast<float*>(means.ptr)},
                                    out_dtype, out.ptr, nullptr);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<float> actual(n), want = expected[g];
    if (out_dtype == DType::bf16) {
      std::vector<uint16_t> bits = out.to_host<uint16_t>(n);
      for (size_t i = 0; i < n; ++i) {
        uint32_t w = uint32_t{bits[i]} << 16;
        std::memcpy(&actual[i], &w, 4);
      }
    } else {
      actual = out.to_host<float>(n);
    }
    CropComparison c = compare_crops(want, actual);
    // f32: equal up to expf's last bit in the blur weights. A value that such a difference moves
    // across the solarisation threshold ends a grey level away: crop_differences counts those
    // crossings apart, and allows 1 in 100,000 of the rest. bf16: the rounding of the output (8
    // bits of mantissa: 2^-8 relative, values below 3). No output may be left unwritten (NaN).
    const double tolerance = out_dtype == DType::bf16 ? 0.0157 : 1e-3;
    const CropDifferences d = crop_differences(want, actual, group, recipe, tolerance);
    if (!quiet)
      MESSAGE((eval ? "eval" : "multi-crop")
              << " " << dtype_name(out_dtype) << " S=" << S << ": max |GPU - CPU| = " << c.max_abs << ", " << c.beyond
              << " of " << c.values << " beyond 1e-3 (" << d.solarize_crossings << " solarisation crossings)");
    INFO((eval ? "eval" : "multi-crop") << " " << dtype_name(out_dtype) << " S=" << S << ", " << count
                                        << " crops: " << d.not_finite << " not finite, " << d.solarize_crossings
                                        << " solarisation crossings, " << d.beyond << " other values beyond "
                                        << tolerance);
    CHECK(d.not_finite == 0);
    CHECK(d.beyond <= n / 100000);
  }
}

}  // namespace

TEST_CASE("GPU decode and crop kernels equal the CPU decode and crops") {
  const uint64_t seed = test_seed();
  std::vector<ImageFile> files = gpu_test_corpus_with_fixtures(seed);
  for (bool eval : {false, true})
    for (DType out_dtype : {DType::f32, DType::bf16})
      check_device_batch(files, multi_crop_test_recipe(), seed, eval, out_dtype);
}

// The CPU suite runs the same batches through the kernels' emulators (test_gpu_batch_plan.cpp).
TEST_CASE("GPU decode and crop kernels on damaged and unusual JPEGs, under random recipes, equal the CPU path") {
  const uint64_t seed = test_seed();
  for (const MutatedBatch& batch : mutated_batches(seed, 60)) {
    INFO(batch.description);
    for (bool eval : {false, true})
      check_device_batch(batch.files, eval ? batch.eval_recipe : batch.recipe, seed, eval, DType::f32, true);
  }
}

// gridDim.y is the crop and stops at 65535: a larger group goes in several launches, each from its
// own first crop. Copies of a batch's cheapest local crops (8 px, few source rows) past that limit
// must render as their first copies, and those as the CPU does: a crop a later launch missed stays
// NaN (the output is poisoned), one rendered from another crop's task differs. The CPU suite runs
// the same check through the emulator at a small count (test_gpu_batch_plan.cpp).
TEST_CASE("GPU crop kernels render a group of more than 65535 crops") {
  const int count = 65535 + 2 * 4 + 3;
  const RepeatedCrops r = repeated_local_crops(test_seed(), count);
  const int S = r.distinct.S;
  const size_t n = size_t(count) * 3 * S * S;
  DeviceBuffer rgb = DeviceBuffer::from(r.rgb), tasks = DeviceBuffer::from(r.tasks);
  DeviceBuffer scratch(size_t(r.scratch_floats) * 4), pixels(n * 4), row_sums(size_t(count) * S * 8),
      means(size_t(count) * 4), out(n * 4, 0xFF);
  cuda_kernels::crop_batch_render(static_cast<const cuda_kernels::CropTask*>(tasks.ptr), count, S, r.max_rows,
                                  static_cast<const uint8_t*>(rgb.ptr), data::crop_normalize(r.recipe),
                                  {static_cast<float*>(scratch.ptr), static_cast<float*>(pixels.ptr),
                                   static_cast<double*>(row_sums.ptr), static_cast<float*>(means.ptr)},
                                  DType::f32, out.ptr, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const RepeatedCropsCheck c = check_repeated_crops(r, out.to_host<float>(n));
  MESSAGE(count << " crops of " << S << " px in one group: " << c.not_finite << " values not written, " << c.unequal
                << " differing from their first copy; first copies against the CPU: " << c.first.beyond
                << " beyond 1e-3");
  CHECK(c.not_finite == 0);
  CHECK(c.unequal == 0);
  CHECK(c.first.not_finite == 0);
  CHECK(c.first.beyond == 0);
}

// A folder of the GPU test corpus in two classes, with three damaged files mixed in (a truncated
// header, garbage with a .jpg name, an empty file): 3 more files than `files`.
data::Dataset write_test_folder(const std::filesystem::path& root, const std::vector<ImageFile>& files) {
  namespace fs = std::filesystem;
  fs::remove_all(root);
  fs::create_directories(root / "a");
  fs::create_directories(root / "b");
  for (size_t i = 0; i < files.size(); ++i) {
    std::ofstream((root / (i % 2 ? "a" : "b") / files[i].name), std::ios::binary)
        .write(reinterpret_cast<const char*>(files[i].bytes.data()), files[i].bytes.size());
  }
  std::ofstream(root / "a" / "truncated.jpg", std::ios::binary)
      .write(reinterpret_cast<const char*>(files[0].bytes.data()), 100);
  std::ofstream(root / "b" / "garbage.jpg") << "this is not an image";
  std::ofstream(root / "b" / "empty.jpg");
  data::Dataset dataset = data::open_dataset(root.string());
  REQUIRE(dataset.size() == static_cast<int64_t>(files.size()) + 3);
  return dataset;
}

// MultiCropLoader's batches live in page-locked buffers, so .to(cuda) only queues the upload.
// The loop goes on without waiting, and gives the workers time to refill the previous batch's
// buffer before its upload runs: on a GPU the upload is queued behind tens of milliseconds of
// matmuls; the emulator holds a copy from page-locked memory back until the next call that must
// see it done, so there the loop sleeps. Workers that refilled a buffer as soon as the next batch
// was handed out would be caught by the upload reading the batch after.
TEST_CASE("MultiCropLoader's page-locked batches upload without a wait: a buffer is refilled after its upload") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("pinned_loader");
  data::Dataset dataset = write_test_folder(root, gpu_test_corpus(seed));
  data::LoaderOptions o;
  o.threads = 3;
  o.prefetch = 1;  // two buffers: batch s + 2 goes where batch s was
  data::AugmentRecipe recipe = multi_crop_test_recipe();
  // The expected batches first, from a loader that is gone before the one under test runs: its
  // workers' waits would complete the held uploads of the other (the emulator completes the
  // copies an event covers whichever loader waits).
  std::vector<std::vector<std::vector<float>>> expected;
  {
    auto reference = data::make_crop_loader(dataset, recipe, 2, seed, o);
    REQUIRE(reference->steps_per_epoch() == 5);
    for (int64_t epoch : {0, 1}) {
      reference->start_epoch(epoch);
      for (int64_t step = 0; step < reference->steps_per_epoch(); ++step) {
        std::vector<std::vector<float>> groups;
        for (const Tensor& g : reference->next().groups) groups.push_back(g.to_vector<float>());
        expected.push_back(groups);
      }
    }
  }
  o.epochs = 2;  // the tested loader runs on into epoch 1 while the last uploads of epoch 0 are queued
  auto loader = data::make_crop_loader(dataset, recipe, 2, seed, o);
  const bool emulated = cuda::device_description(0).find("emulator") != std::string::npos;
  Tensor busy = emulated ? Tensor() : full({4096, 4096}, 1e-4, {DType::f32, Device::cuda()});
  std::vector<std::vector<Tensor>> uploaded;
  for (int64_t epoch : {0, 1}) {
    loader->start_epoch(epoch);
    for (int64_t step = 0; step < loader->steps_per_epoch(); ++step) {
      data::LoaderBatch batch = loader->next();
      for (int i = 0; busy.defined() && i < 8; ++i) busy = matmul(busy, busy);
      if (emulated) std::this_thread::sleep_for(std::chrono::milliseconds(30));
      std::vector<Tensor> on_device;
      for (const Tensor& g : batch.groups) on_device.push_back(g.to(Device::cuda()));
      uploaded.push_back(on_device);
    }
  }
  REQUIRE(uploaded.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    for (size_t k = 0; k < expected[i].size(); ++k) {
      INFO("epoch " << i / 5 << " step " << i % 5 << " group " << k);
      const bool same = uploaded[i][k].to(Device::cpu()).to_vector<float>() == expected[i][k];
      CHECK(same);
    }
  fs::remove_all(root);
}

// bamprobe's --linear_aug views through the GPU loader, keyed by each image's index in the whole
// folder (Dataset::first_index): the parts a data-parallel bamprobe's ranks extract make, between
// them, the whole folder's features.
TEST_CASE("GpuCropLoader: a contiguous part's augmented crops are the whole folder's crops of its images") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("gpu_parts");
  fs::remove_all(root);
  fs::create_directories(root / "a");
  const std::vector<ImageFile> files = gpu_test_corpus(seed);
  for (const ImageFile& f : files)
    std::ofstream(root / "a" / f.name, std::ios::binary)
        .write(reinterpret_cast<const char*>(f.bytes.data()), f.bytes.size());
  const data::Dataset whole = data::open_dataset(root.string());
  REQUIRE(whole.size() >= 6);
  FeatureOptions o;
  o.img_size = 16;
  o.batch_size = 3;
  o.threads = 2;
  o.augment = true;
  o.epoch = 2;
  o.seed = seed;
  o.backend = data::DataBackend::gpu;
  const Tensor all = extract_features(nullptr, whole, o).features;
  std::vector<Tensor> parts;
  for (int64_t r = 0; r < 3; ++r)
    parts.push_back(extract_features(nullptr, data::contiguous_part(whole, r, 3), o).features);
  CHECK(max(abs(sub(cat(parts, 0), all))).item() == 0);
  o.epoch = 3;  // other crops: the comparison can fail
  CHECK(max(abs(sub(extract_features(nullptr, whole, o).features, all))).item() > 0);
  fs::remove_all(root);
}

// The four kinds of batch: RandomResizedCrop, ContrastiveCrop (epoch 1's crops placed by random
// boxes), the evaluation transform, and the whole image resized (ContrastiveCrop's box update).
TEST_CASE("GpuCropLoader gives MultiCropLoader's batches, with damaged files skipped") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("gpu_loader");
  data::Dataset dataset = write_test_folder(root, gpu_test_corpus(seed));
  auto boxes = std::make_shared<data::ObjectBoxes>();
  boxes->first_epoch = 1;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 0.5f);
  for (int64_t i = 0; i < dataset.size(); ++i) {
    const float top = u(rng), left = u(rng);
    boxes->boxes.push_back({top, left, top + u(rng), left + u(rng)});
  }

  for (const char* kind : {"multi-crop", "contrastive", "eval", "whole"}) {
    const bool eval = kind[0] == 'e' || kind[0] == 'w';
    data::AugmentRecipe recipe = multi_crop_test_recipe();
    data::LoaderOptions o;
    o.threads = 3;
    o.eval_transform = eval;
    o.eval_whole_image = kind[0] == 'w';
    o.eval_size = 64;
    o.drop_last = !eval;
    o.shuffle = !eval;
    o.epochs = 2;  // both run on from epoch 0 into epoch 1
    data::LoaderOptions g = o;
    g.backend = data::DataBackend::gpu;
    auto cpu = data::make_crop_loader(dataset, recipe, 4, seed, o);
    auto gpu = data::make_crop_loader(dataset, recipe, 4, seed, g);
    if (kind[0] == 'c') {
      cpu->set_object_boxes(boxes);
      gpu->set_object_boxes(boxes);
    }
    const int64_t per_epoch = eval ? dataset.size() : cpu->steps_per_epoch() * 4;
    auto compare_steps = [&](int64_t epoch, int64_t first_step) {
      for (int64_t step = first_step; step < cpu->steps_per_epoch(); ++step) {
        data::LoaderBatch a = cpu->next(), bb = gpu->next();
        CHECK(a.indices == bb.indices);
        CHECK(a.labels == bb.labels);
        REQUIRE(a.groups.size() == bb.groups.size());
        for (size_t k = 0; k < a.groups.size(); ++k) {
          CHECK(bb.groups[k].device().is_cuda());
          CHECK(a.groups[k].shape() == bb.groups[k].shape());
          std::vector<float> want = a.groups[k].to_vector<float>(),
                             got = bb.groups[k].to(Device::cpu()).to_vector<float>();
          CropComparison c = compare_crops(want, got);
          INFO("epoch " << epoch << " step " << step << " group " << k << " " << kind);
          CHECK(c.beyond <= c.values / 100000);
        }
      }
    };
    for (int64_t epoch : {0, 1}) {
      if (epoch == 1) {
        // Both have run on into epoch 1 before it starts.
        CHECK(settled_count([&] { return gpu->images_decoded(); }, per_epoch + 1) > per_epoch);
        CHECK(settled_count([&] { return cpu->images_decoded(); }, per_epoch + 1) > per_epoch);
      }
      cpu->start_epoch(epoch);
      gpu->start_epoch(epoch);
      compare_steps(epoch, 0);
    }
    CHECK(gpu->skipped_files() == cpu->skipped_files());
    if (eval) CHECK(gpu->skipped_files() == 3);  // every file is visited once
    // Every image of both epochs decoded once: what was prepared ahead of epoch 1 was kept.
    CHECK(cpu->images_decoded() == 2 * per_epoch);
    CHECK(gpu->images_decoded() == 2 * per_epoch);
    // Anywhere else, a restart: the GPU loader drops its host and output slots and starts there.
    cpu->start_epoch(1, 2);
    gpu->start_epoch(1, 2);
    compare_steps(1, 2);
    MESSAGE(gpu->describe_buffers());
  }
  fs::remove_all(root);
}

// The pinned arenas start from a typical file (the 90th percentile of the sampled headers): a
// folder of small images with one large JPEG and one large PNG sends the JPEG's coefficients to the
// CPU and the PNG's pixels through pageable memory at first, with the CPU loader's crops all the
// same, and then grows the arenas, so that the next epoch takes the JPEG on the GPU.
TEST_CASE("GpuCropLoader grows its page-locked arenas for files larger than the sampled ones") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("gpu_arena");
  fs::remove_all(root);
  fs::create_directories(root / "c");
  std::vector<ImageFile> files;
  for (int i = 0; i < 14; ++i) files.push_back(encode(fmt::format("small_{:02d}.jpg", i), 24, 20, 3, 85, seed + i));
  // 4:2:0 at 1200 x 1000: 3.6 MB of coefficients, past an arena of 4 small files and 1 MiB; a
  // 2400 x 2400 PNG: 17.3 MB of pixels, past the 16 MiB pixel arena. Both in the first batch.
  files.push_back(encode("large_1200x1000.jpg", 1200, 1000, 3, 80, seed + 20));
  files.push_back(encode("large_2400x2400.png", 2400, 2400, 3, 0, seed + 21, true));
  for (const ImageFile& f : files)
    std::ofstream(root / "c" / f.name, std::ios::binary)
        .write(reinterpret_cast<const char*>(f.bytes.data()), static_cast<std::streamsize>(f.bytes.size()));
  const data::Dataset dataset = data::open_dataset(root.string());
  REQUIRE(dataset.size() == 16);
  data::AugmentRecipe recipe;
  recipe.global_crops = 1;
  recipe.local_crops = 0;
  recipe.global_size = 16;
  data::LoaderOptions o;
  o.threads = 2;
  o.shuffle = false;
  o.epochs = 2;
  data::LoaderOptions g = o;
  g.backend = data::DataBackend::gpu;
  auto cpu = data::make_crop_loader(dataset, recipe, 4, seed, o);
  auto gpu_loader = data::make_crop_loader(dataset, recipe, 4, seed, g);
  auto* gpu = dynamic_cast<data::GpuCropLoader*>(gpu_loader.get());
  REQUIRE(gpu != nullptr);
  const std::string before = gpu->describe_buffers();
  for (int64_t epoch : {0, 1}) {
    cpu->start_epoch(epoch);
    gpu->start_epoch(epoch);
    for (int64_t step = 0; step < cpu->steps_per_epoch(); ++step) {
      data::LoaderBatch a = cpu->next(), b = gpu->next();
      CHECK(a.indices == b.indices);
      CropComparison c =
          compare_crops(a.groups[0].to_vector<float>(), b.groups[0].to(Device::cpu()).to_vector<float>());
      INFO("epoch " << epoch << " step " << step);
      CHECK(c.beyond <= c.values / 100000);
    }
  }
  const std::string after = gpu->describe_buffers();
  MESSAGE(before);
  MESSAGE(after);
  // The large JPEG missed the arena once (epoch 0's first batch, reconstructed on the CPU); its
  // second time, in a slot grown meanwhile, it went to the GPU. The PNG goes through the CPU anyway.
  CHECK(after.find("; 1 image over the coefficient arena decoded on the CPU") != std::string::npos);
  CHECK(after.find("; 1 image over the pixel arena uploaded from pageable memory") != std::string::npos);
  CHECK(gpu->gpu_decoded_images() == 2 * 15 - 1);
  CHECK(gpu->cpu_decoded_images() == 2 + 1);
  fs::remove_all(root);
}

// The trainer's stream waits for each batch's kernels on the device, where the host does not see
// it: next() times that wait between two events and reports it four batches later, so the
// progress line's data wait includes a GPU that starves on the loader's kernels. With nothing
// else on the stream, every wait is the batch's remaining decode and crops; on a GPU that has
// finished them already it may read 0, on the emulator it is the time between the two records
// (launches run when issued), which is never 0: there the reading itself is checked.
TEST_CASE("GpuCropLoader reports the device's wait for its kernels, four batches late") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("gpu_wait");
  data::Dataset dataset = write_test_folder(root, gpu_test_corpus(seed));
  data::LoaderOptions o;
  o.threads = 2;
  o.backend = data::DataBackend::gpu;
  o.shuffle = false;
  o.epochs = 1;
  auto gpu = data::make_crop_loader(dataset, multi_crop_test_recipe(), 1, seed, o);
  gpu->start_epoch(0);
  REQUIRE(gpu->steps_per_epoch() >= 6);
  double later = 0;
  for (int64_t step = 0; step < 6; ++step) {
    const data::LoaderBatch b = gpu->next();
    INFO("step " << step);
    CHECK(std::isfinite(b.device_wait_seconds));
    CHECK(b.device_wait_seconds >= 0);
    if (step < 4)
      CHECK(b.device_wait_seconds == 0);  // none timed yet
    else
      later += b.device_wait_seconds;
  }
  MESSAGE("device wait of steps 4 and 5: " << later << " s");
  if (cuda::device_description(0).find("emulator") != std::string::npos) CHECK(later > 0);
  CHECK(later < 60);
  fs::remove_all(root);
}

// ContrastiveCrop's box update where bamtrain runs it with --device cuda --data_backend gpu: the
// GPU loader's whole-image resize and the CUDA attention. The GPU's crops differ from the CPU's by
// up to 1e-3 and its attention by rounding, so an edge may move by a pixel where a value sits at
// the threshold; no more.
TEST_CASE("ContrastiveCrop's box update on the GPU finds the CPU's boxes") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("gpu_boxes");
  data::Dataset dataset = write_test_folder(root, gpu_test_corpus(seed));
  Generator gen(seed);
  VisionTransformer vit(tiny_vit_config(8, 64), &gen);
  vit.train(false);
  ObjectLocatorOptions o = small_locator_options(64, 0.7);
  const std::vector<data::ObjectBox> cpu = locate_objects(vit, dataset, o);
  vit.to(Device::cuda());
  o.backend = data::DataBackend::gpu;
  const std::vector<data::ObjectBox> gpu = locate_objects(vit, dataset, o);
  REQUIRE(gpu.size() == cpu.size());
  int smaller = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    CAPTURE(i);
    for (auto edge : {&data::ObjectBox::top, &data::ObjectBox::left, &data::ObjectBox::bottom, &data::ObjectBox::right})
      CHECK(std::abs(gpu[i].*edge - cpu[i].*edge) <= 1.0f / 64 + 1e-6f);
    smaller += cpu[i].bottom - cpu[i].top < 0.98f || cpu[i].right - cpu[i].left < 0.98f;
  }
  CHECK(smaller > 0);
  fs::remove_all(root);
}

// With two host slots the GPU loader gets three batches ahead when an epoch ends: the first is
// launched into the free output slot, which frees its host slot for the third; the second waits
// for the trainer to take the first. Every file is then made unreadable: the fourth batch fails,
// the three before it are still handed out, next() throws at it, and start_epoch tries again.
TEST_CASE("GpuCropLoader: a worker's failure spoils its batch only, and the next start_epoch tries again") {
  namespace fs = std::filesystem;
  const uint64_t seed = test_seed();
  fs::path root = scratch_dir("gpu_spoiled");
  data::Dataset dataset = write_test_folder(root, gpu_test_corpus(seed));
  data::AugmentRecipe recipe = multi_crop_test_recipe();
  data::LoaderOptions o;
  o.threads = 3;
  o.prefetch = 1;
  o.epochs = 2;
  // Epoch 1 from the CPU loader (copied out: its buffers are refilled).
  std::vector<std::pair<std::vector<int64_t>, std::vector<std::vector<float>>>> expected;
  {
    auto cpu = data::make_crop_loader(dataset, recipe, 2, seed, o);
    REQUIRE(cpu->steps_per_epoch() >= 4);
    cpu->start_epoch(1);
    for (int64_t step = 0; step < cpu->steps_per_epoch(); ++step) {
      data::LoaderBatch b = cpu->next();
      expected.push_back({b.indices, {}});
      for (const Tensor& t : b.groups) expected.back().second.push_back(t.to_vector<float>());
    }
  }
  auto check_batch = [&](const data::LoaderBatch& got, size_t step) {
    INFO("epoch 1 step " << step);
    CHECK(got.indices == expected[step].first);
    REQUIRE(got.groups.size() == expected[step].second.size());
    for (size_t k = 0; k < got.groups.size(); ++k) {
      CropComparison c = compare_crops(expected[step].second[k], got.groups[k].to(Device::cpu()).to_vector<float>());
      CHECK(c.beyond <= c.values / 100000);
    }
  };
  data::LoaderOptions g = o;
  g.backend = data::DataBackend::gpu;
  auto gpu = data::make_crop_loader(dataset, recipe, 2, seed, g);
  const int64_t steps = gpu->steps_per_epoch(), per_epoch = steps * 2;
  gpu->start_epoch(0);
  for (int64_t step = 0; step < steps; ++step) gpu->next();
  // Three batches ahead, and the workers wait.
  REQUIRE(settled_count([&] { return gpu->images_decoded(); }, per_epoch + 6) == per_epoch + 6);
  std::optional<MovedFolder> away(std::in_place, root, root.string() + "_away");
  gpu->start_epoch(1);
  check_batch(gpu->next(), 0);
  // The fourth batch's worker is free now; it fails once every file is reported missing.
  REQUIRE(settled_count([&] { return gpu->skipped_files(); }, dataset.size()) == dataset.size());
  check_batch(gpu->next(), 1);
  check_batch(gpu->next(), 2);
  CHECK_THROWS_WITH_AS(gpu->next(), doctest::Contains("images could be decoded"), bam::Error);
  CHECK_THROWS_WITH_AS(gpu->next(), doctest::Contains("images could be decoded"), bam::Error);
  away.reset();
  gpu->start_epoch(1);
  for (int64_t step = 0; step < steps; ++step) check_batch(gpu->next(), static_cast<size_t>(step));
  fs::remove_all(root);
}

}  // namespace bam::test
