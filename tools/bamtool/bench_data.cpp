// `bamtool bench-data`: how many images a second the data path delivers, on a folder of JPEGs.
// Rows: decode only (CPU: our whole decoder per thread; GPU: the Huffman half on CPU threads, then
// the batched reconstruction kernels on images already uploaded), and decode + the full multi-crop
// recipe (2x224 + 6x96) through the real loaders (MultiCropLoader, GpuCropLoader). --make_corpus N
// writes N synthetic 500x375 quality-90 JPEGs first (the GPU machine has no image tools).
// The PyTorch peer is tools/peers/torch_data_bench.py (torchvision nvJPEG decode, PIL + DINO).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>

#include "bam/output_dir.h"
#include "data/dataset.h"
#include "data/gpu_batch_plan.h"
#include "data/image_decode.h"
#include "data/loader.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "tools/bamtool/commands.h"
#include "tools/common/flag_checks.h"
#include "tools/common/image_files.h"
#ifdef BAM_WITH_CUDA
#include "engine/cuda_check.h"
#include "kernels/cuda/jpeg_batch.h"
#endif

namespace bam::tool {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchDataOptions {
  std::string data_path;
  int64_t make_corpus = 0, batch_size = 256, threads = 16;
  double seconds = 10;
  std::string backend = "both", mode = "both";
};

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void make_corpus(const std::string& folder, int64_t n) {
  namespace fs = std::filesystem;
  prepare_output_dir(folder, "--data_path");
  const int W = 500, H = 375;
  Generator gen(1234);
  for (int64_t i = 0; i < n; ++i) {
    // Smooth colour fields plus noise: JPEG sizes near a photo's at quality 90 (~40-60 KB).
    std::vector<float> noise = randn({W * H * 3}, {}, &gen).to_vector<float>();
    std::vector<uint8_t> px(size_t(W) * H * 3);
    const float fx = 0.01f + 0.002f * (i % 7), fy = 0.013f + 0.003f * (i % 5);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        for (int c = 0; c < 3; ++c) {
          float v = 128 + 70 * std::sin(fx * x * (c + 1) + fy * y + i) + 12 * noise[(size_t(y) * W + x) * 3 + c];
          px[(size_t(y) * W + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
        }
    std::string path = (fs::path(folder) / fmt::format("img_{:05d}.jpg", i)).string();
    write_jpeg_file(path, W, H, 3, px.data(), 90);
  }
  std::printf("wrote %lld JPEGs (500x375, quality 90) to %s\n", static_cast<long long>(n), folder.c_str());
}

// The decode rows' files, held in memory (as torchvision's decode_jpeg benchmark holds its bytes):
// a sample of the folder, its first files up to kSampleFiles or kSampleBytes, so that a folder of
// ImageNet's size is not read whole. Each is decoded once here: a damaged file is reported and left
// out, as the loaders skip it, and the Huffman row takes only what the GPU path decodes (sequential
// JPEGs; progressive, CMYK and PNG files go through the CPU decoder there).
constexpr size_t kSampleFiles = 2048;
constexpr size_t kSampleBytes = size_t{1} << 30;
struct DecodeSample {
  std::vector<std::vector<uint8_t>> all, sequential_jpeg;
  int64_t damaged = 0;
};
DecodeSample read_decode_sample(const data::Dataset& d) {
  DecodeSample sample;
  size_t bytes = 0;
  for (size_t i = 0; i < d.files.size() && sample.all.size() < kSampleFiles && bytes < kSampleBytes; ++i) {
    std::vector<uint8_t> file;
    bool on_gpu = false;
    try {
      // The GPU loader's own rule: what it decodes on the device, what on the CPU, what it refuses.
      file = data::read_image_file(d.files[i]);
      std::vector<int16_t> coefficients;
      data::DecodedImage pixels;
      on_gpu = data::prepare_image_for_gpu(
                   file.data(), file.size(), d.files[i],
                   [&](const data::JpegLayout& layout) {
                     coefficients.assign(static_cast<size_t>(layout.num_coefficients), 0);
                     return coefficients.data();
                   },
                   &pixels)
                   .decode_on_gpu;
    } catch (const data::ImageDecodeError& e) {
      if (++sample.damaged <= 3) std::fprintf(stderr, "bench-data: skipped: %s\n", e.what());
      continue;
    }
    if (on_gpu) sample.sequential_jpeg.push_back(file);
    bytes += file.size();
    sample.all.push_back(std::move(file));
  }
  std::printf(
      "decode rows: %zu files (%.1f MiB) of the %zu, held in memory; %zu of them for the GPU path; %lld "
      "damaged and skipped\n",
      sample.all.size(), static_cast<double>(bytes) / 1048576.0, d.files.size(), sample.sequential_jpeg.size(),
      static_cast<long long>(sample.damaged));
  return sample;
}

// Runs fn(i) for i = 0, 1, ... on `threads` threads until `seconds` pass; returns items per second.
template <typename Fn>
double parallel_rate(int64_t threads, double seconds, Fn fn) {
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first thread's failure, rethrown after the join
  std::mutex error_mutex;
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  try {
    for (int64_t t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        try {
          while (!failed.load() && since(start) < seconds) {
            fn(next.fetch_add(1));
            done.fetch_add(1);
          }
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
          failed = true;
        }
      });
  } catch (const std::system_error& e) {  // the threads started are stopped and joined first
    failed = true;
    for (auto& t : pool) t.join();
    fail("--threads {}: could not start thread {}: {}", threads, pool.size() + 1, e.what());
  }
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return done.load() / since(start);
}

struct Row {
  std::string what;
  double img_per_s;  // < 0: the measurement failed (note says why)
  std::string note;
};

// Measures one row; an error (a CUDA fault on the GPU rows, say) is recorded in that row, and the
// rows measured before and after it still print.
double measure_row(std::vector<Row>* rows, const std::string& what, const std::function<double(std::string*)>& rate) {
  std::string note;
  try {
    const double r = rate(&note);
    rows->push_back({what, r, note});
    return r;
  } catch (const std::exception& e) {
    rows->push_back({what, -1.0, std::string("FAILED: ") + e.what()});
    return -1.0;
  }
}

double loader_rate(const data::Dataset& d, const BenchDataOptions& o, data::DataBackend backend, std::string* note) {
  data::AugmentRecipe recipe;
  recipe.global_crops = 2;
  recipe.local_crops = 6;
  recipe.global_scale_min = 0.25;
  data::LoaderOptions lo;
  lo.threads = static_cast<int>(o.threads);
  lo.backend = backend;
  lo.epochs = int64_t{1} << 30;  // as many as the time allows, with no pause between them
  lo.gpu_output = DType::bf16;   // what bamtrain's GPU loader writes for bf16 training, its default there
  auto loader = data::make_crop_loader(d, recipe, o.batch_size, 0, lo);
  *note = loader->describe_buffers();
  int64_t images = 0, epoch = 0;
  loader->start_epoch(epoch);
  int64_t step = 0;
  const auto next_batch = [&] {
    if (step == loader->steps_per_epoch()) {
      loader->start_epoch(++epoch);
      step = 0;
    }
    ++step;
    return static_cast<int64_t>(loader->next().indices.size());
  };
  // Warm-up: the threads started and every batch buffer written once (prefetch + 1 host slots for
  // the CPU loader, prefetch + 2 batches for the GPU loader). Without CUDA the buffers are plain
  // memory whose pages the kernel maps on first touch: in a short run that one-time cost (15 % of
  // the time in a 6 s run of the 8-crop recipe on two threads) would pass for the loader's rate.
  for (int64_t i = 0; i < lo.prefetch + 2; ++i) next_batch();
  const auto start = Clock::now();
  while (since(start) < o.seconds) images += next_batch();
  if (backend == data::DataBackend::gpu) cuda::synchronize();  // the last batch's kernels
  return images / since(start);
}

#ifdef BAM_WITH_CUDA
// The reconstruction kernels alone, on one batch of whole images already on the device.
double gpu_reconstruct_rate(const std::vector<std::vector<uint8_t>>& files, int64_t batch, double seconds) {
  std::vector<data::GpuBatchImage> images;
  std::vector<int16_t> coefficients;
  std::vector<std::vector<data::GpuBatchCrop>> crops(1);
  for (size_t i = 0; images.size() < static_cast<size_t>(batch) && i < files.size(); ++i) {
    std::vector<int16_t> c;
    data::DecodedImage unused;
    data::GpuBatchImage im = data::prepare_image_for_gpu(files[i].data(), files[i].size(), "bench", [&](const data::JpegLayout& l) {
      c.assign(size_t(l.num_coefficients), 0);
      return c.data();
    }, &unused);
    if (!im.decode_on_gpu) continue;
    im.coef_offset = static_cast<int64_t>(coefficients.size());
    coefficients.insert(coefficients.end(), c.begin(), c.end());
    data::CropParams whole;  // a crop box of the whole image: every block is reconstructed
    whole.width = im.width;
    whole.height = im.height;
    whole.out_size = 224;
    crops[0].push_back({static_cast<int>(images.size()), data::crop_task_from_params(whole, im.width, im.height, 0)});
    images.push_back(im);
  }
  BAM_CHECK(!images.empty(), "bench-data: no sequential JPEG to reconstruct on the GPU");
  data::GpuBatchPlan plan = data::plan_gpu_batch(images, {224}, crops);
  void *d_coef, *d_blocks, *d_pixels, *d_planes, *d_rgb;
  BAM_CUDA_CHECK(cudaMalloc(&d_coef, coefficients.size() * 2));
  BAM_CUDA_CHECK(cudaMalloc(&d_blocks, plan.block_tasks.size() * sizeof(plan.block_tasks[0])));
  BAM_CUDA_CHECK(cudaMalloc(&d_pixels, plan.pixel_tasks.size() * sizeof(plan.pixel_tasks[0])));
  BAM_CUDA_CHECK(cudaMalloc(&d_planes, plan.plane_bytes));
  BAM_CUDA_CHECK(cudaMalloc(&d_rgb, plan.rgb_bytes));
  BAM_CUDA_CHECK(cudaMemcpy(d_coef, coefficients.data(), coefficients.size() * 2, cudaMemcpyHostToDevice));
  BAM_CUDA_CHECK(cudaMemcpy(d_blocks, plan.block_tasks.data(), plan.block_tasks.size() * sizeof(plan.block_tasks[0]), cudaMemcpyHostToDevice));
  BAM_CUDA_CHECK(cudaMemcpy(d_pixels, plan.pixel_tasks.data(), plan.pixel_tasks.size() * sizeof(plan.pixel_tasks[0]), cudaMemcpyHostToDevice));
  auto run = [&] {
    cuda_kernels::jpeg_idct_batch(static_cast<cuda_kernels::JpegBlockTask*>(d_blocks), int(plan.block_tasks.size()),
                                  plan.total_blocks, static_cast<int16_t*>(d_coef), static_cast<uint8_t*>(d_planes), nullptr);
    cuda_kernels::jpeg_upsample_convert_batch(static_cast<cuda_kernels::JpegPixelTask*>(d_pixels),
                                              int(plan.pixel_tasks.size()), plan.total_pixels,
                                              static_cast<uint8_t*>(d_planes), static_cast<uint8_t*>(d_rgb), nullptr);
  };
  run();
  BAM_CUDA_CHECK(cudaDeviceSynchronize());
  int64_t launches = 0;
  const auto start = Clock::now();
  while (since(start) < std::min(seconds, 3.0)) {
    for (int k = 0; k < 10; ++k) run();
    BAM_CUDA_CHECK(cudaDeviceSynchronize());
    launches += 10;
  }
  const double rate = launches * double(images.size()) / since(start);
  for (void* p : {d_coef, d_blocks, d_pixels, d_planes, d_rgb}) cudaFree(p);
  return rate;
}
#endif

int run_bench_data(const BenchDataOptions& o) {
  BAM_CHECK(o.backend == "cpu" || o.backend == "gpu" || o.backend == "both", "--backend must be cpu, gpu or both");
  BAM_CHECK(o.mode == "decode" || o.mode == "crops" || o.mode == "both", "--mode must be decode, crops or both");
  BAM_CHECK(o.make_corpus == 0 || o.make_corpus >= o.batch_size,
            "--make_corpus {}: fewer images than one batch of {} (--batch_size)", o.make_corpus, o.batch_size);
  const bool gpu = o.backend != "cpu", run_gpu = gpu && cuda::is_available(), run_cpu = o.backend != "gpu";
  if (gpu && !run_gpu) {  // before any corpus is written
    BAM_CHECK(o.backend == "both", "--backend gpu: no usable CUDA device ({})", cuda::unavailable_reason());
    std::printf("GPU rows skipped: %s\n", cuda::unavailable_reason().c_str());
  }
  if (o.make_corpus > 0) make_corpus(o.data_path, o.make_corpus);
  data::Dataset d;
  try {
    d = data::open_dataset(o.data_path);
  } catch (const data::ImageDecodeError& e) {
    fail("--data_path {}", e.what());
  }
  BAM_CHECK(d.size() >= o.batch_size, "--data_path {}: {} images, fewer than one batch of {}", o.data_path, d.size(),
            o.batch_size);
  std::printf("bench-data: %lld images from %s, %lld threads, batch %lld, %.0f s per row\n",
              static_cast<long long>(d.size()), o.data_path.c_str(), static_cast<long long>(o.threads),
              static_cast<long long>(o.batch_size), o.seconds);
  std::vector<Row> rows;
  if (o.mode != "crops") {
    const DecodeSample sample = read_decode_sample(d);
    BAM_CHECK(!sample.all.empty(), "--data_path {}: no decodable image among the first files", o.data_path);
    const auto& files = sample.all;
    const auto& jpegs = sample.sequential_jpeg;
    auto pick = [&](int64_t i) -> const std::vector<uint8_t>& { return files[static_cast<size_t>(i) % files.size()]; };
    auto pick_jpeg = [&](int64_t i) -> const std::vector<uint8_t>& {
      return jpegs[static_cast<size_t>(i) % jpegs.size()];
    };
    if (run_cpu)
      measure_row(&rows, "decode, CPU (whole decoder)", [&](std::string*) {
        return parallel_rate(o.threads, o.seconds,
                             [&](int64_t i) { data::decode_image(pick(i).data(), pick(i).size(), "bench"); });
      });
    if (gpu && jpegs.empty()) rows.push_back({"decode, hybrid CPU+GPU", -1, "no sequential JPEG in the sample"});
    if (gpu && !jpegs.empty()) {
      // The hybrid path's CPU half runs on the host alone: it is measured even without a device,
      // as the ceiling the CPU threads put on the GPU loader.
      // (Only the hybrid row below uses the rate, in CUDA builds.)
      [[maybe_unused]] const double entropy =
          measure_row(&rows, "  Huffman half on CPU threads", [&](std::string* note) {
            if (!run_gpu) *note = "the GPU loader's CPU ceiling";
            return parallel_rate(o.threads, o.seconds, [&](int64_t i) {
              data::decode_jpeg_coefficients(pick_jpeg(i).data(), pick_jpeg(i).size(), "bench");
            });
          });
#ifdef BAM_WITH_CUDA
      if (run_gpu) {
        const double kernels = measure_row(&rows, "  reconstruction kernels (GPU)", [&](std::string* note) {
          *note = "whole images, resident batch, timed for at most 3 s";
          return gpu_reconstruct_rate(jpegs, o.batch_size, o.seconds);
        });
        // Not measured as one: the two halves overlap in the GPU loader, so the slower one bounds it.
        if (entropy >= 0 && kernels >= 0)
          rows.push_back({"decode, hybrid CPU+GPU (estimate)", std::min(entropy, kernels),
                          "the slower of the two halves above, each timed alone"});
      }
#endif
    }
  }
  if (o.mode != "decode") {
    if (run_cpu)
      measure_row(&rows, "decode + 2x224+6x96, CPU loader",
                  [&](std::string* note) { return loader_rate(d, o, data::DataBackend::cpu, note); });
    if (run_gpu)
      measure_row(&rows, "decode + 2x224+6x96, GPU loader",
                  [&](std::string* note) { return loader_rate(d, o, data::DataBackend::gpu, note); });
  }
  std::printf("\n%-36s %12s  %s\n", "path", "img/s", "notes");
  bool failed = false;
  for (const Row& r : rows) {
    if (r.img_per_s >= 0) {
      std::printf("%-36s %12.1f  %s\n", r.what.c_str(), r.img_per_s, r.note.c_str());
    } else {
      std::printf("%-36s %12s  %s\n", r.what.c_str(), "failed", r.note.c_str());
      failed = true;
    }
  }
  if (failed) return 1;
  return 0;
}

}  // namespace

Action add_bench_data(CLI::App& app) {
  auto o = std::make_shared<BenchDataOptions>();
  CLI::App* sub = app.add_subcommand("bench-data", "Images per second of the data path (decode; decode + multi-crop)");
  sub->add_option("--data_path", o->data_path, "folder of JPEGs (with --make_corpus: where to write them)")->required();
  sub->add_option("--make_corpus", o->make_corpus, "first write N synthetic 500x375 quality-90 JPEGs there")
      ->default_val(o->make_corpus)
      ->check(non_negative_number);
  sub->add_option("--threads", o->threads, "CPU threads (decoding workers)")
      ->default_val(o->threads)
      ->check(CLI::Range(1, 1024));
  sub->add_option("--batch_size", o->batch_size, "images per batch")
      ->default_val(o->batch_size)
      ->check(positive_number);
  sub->add_option("--seconds", o->seconds, "time per row")->default_val(o->seconds)->check(finite_range(0.001, 3600.0));
  sub->add_option("--backend", o->backend, "cpu | gpu | both")->default_val(o->backend);
  sub->add_option("--mode", o->mode, "decode | crops | both")->default_val(o->mode);
  return [o] { return run_bench_data(*o); };
}

}  // namespace bam::tool
