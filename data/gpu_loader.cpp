// GpuCropLoader: CPU threads for entropy decoding, a launcher thread for uploads and kernels,
// events between the loader's stream and the trainer's.
#include "data/gpu_loader.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "data/loader_support.h"
#include "engine/cuda.h"
#include "engine/cuda_check.h"
#include "engine/error.h"

namespace bam::data {

namespace {

constexpr int kOutputSlots = 2;  // batch k+1 is written while the trainer reads batch k

int64_t align16(int64_t n) { return (n + 15) / 16 * 16; }

// A typical image's coefficient buffer (bytes) and pixel count, from the frame headers of a few
// files spread over the dataset: the 90th percentile of each, which sizes the pinned arenas. Not
// the largest: one 4000 x 3000 photo among the samples would pin 36 MB for every image of every
// slot. An image that does not fit the arena is decoded on the CPU (and counted in the report).
struct SizeEstimate {
  int64_t coefficient_bytes = 0, pixels = 0;
};
struct HeaderSeen {};

int64_t percentile90(std::vector<int64_t> values) {
  std::sort(values.begin(), values.end());
  return values[(values.size() - 1) * 9 / 10];
}

SizeEstimate estimate_sizes(const Dataset& d) {
  std::vector<int64_t> coefficient_bytes, pixels;
  const int64_t samples = std::min<int64_t>(d.size(), 64);
  for (int64_t k = 0; k < samples; ++k) {
    const std::string& path = d.files[static_cast<size_t>(k * d.size() / samples)];
    try {
      std::vector<uint8_t> bytes = read_image_file(path);
      decode_jpeg_coefficients_into(bytes.data(), bytes.size(), path, [&](const JpegLayout& layout) -> int16_t* {
        coefficient_bytes.push_back(layout.num_coefficients * 2);
        pixels.push_back(int64_t{layout.width} * layout.height);
        throw HeaderSeen{};
      });
    } catch (const HeaderSeen&) {
    } catch (const std::exception&) {
      // not a sequential JPEG, or damaged: the workers will say so
    }
  }
  SizeEstimate e;
  e.coefficient_bytes = coefficient_bytes.empty() ? 500 * 375 * 3 : percentile90(coefficient_bytes);  // a 4:2:0 photo
  e.pixels = pixels.empty() ? 500 * 375 : percentile90(pixels);
  return e;
}

// The most one arena pins (a slot has two, coefficients and pixels): 1 GiB. ImageNet's 256-image
// batches take about 140 MB of coefficients.
constexpr int64_t kMaxArenaBytes = int64_t{1} << 30;

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t as_event(void* e) { return static_cast<cudaEvent_t>(e); }

}  // namespace

GpuCropLoader::GpuCropLoader(Dataset dataset, AugmentRecipe recipe, int64_t batch_size, uint64_t seed,
                             LoaderOptions options)
    : dataset_(std::move(dataset)),
      recipe_(recipe),
      batch_(batch_size),
      seed_(seed),
      options_(options),
      groups_(crop_group_layout(recipe_, options_)),
      sequence_(dataset_, batch_size, options.drop_last, options.shuffle, seed, options.shard) {
  BAM_CHECK(options_.gpu_output == DType::f32 || options_.gpu_output == DType::bf16,
            "GPU loader: crops are written in f32 or bf16, not {}", dtype_name(options_.gpu_output));
  normalize_ = crop_normalize(recipe_);
  cuda::use_selected_device_on_this_thread();
  device_ = cuda::selected_device();

  // The destructor does not run for a constructor that throws: stop the threads that started
  // (none, if allocation failed) before freeing what was allocated.
  try {
    allocate_resources();
    const int threads = std::max(1, options_.threads);
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
    launcher_ = std::thread([this] { launcher_loop(); });
  } catch (...) {
    stop_threads();
    free_resources();
    throw;
  }
}

void GpuCropLoader::stop_threads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  slot_done_.notify_all();
  launched_.notify_all();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
  if (launcher_.joinable()) launcher_.join();
}

void GpuCropLoader::allocate_resources() {
  const SizeEstimate estimate = estimate_sizes(dataset_);
  const int64_t coefficient_arena =
      align16(std::min(kMaxArenaBytes, batch_ * estimate.coefficient_bytes * 5 / 4 + (int64_t{1} << 20)));
  const int64_t pixel_arena =
      align16(std::min(kMaxArenaBytes, std::max<int64_t>(int64_t{16} << 20, batch_ * estimate.pixels * 3 / 8)));
  host_slots_.resize(static_cast<size_t>(std::max(1, options_.prefetch)) + 1);
  for (auto& slot : host_slots_) {
    slot = std::make_unique<HostSlot>();
    slot->coefficients = static_cast<int16_t*>(cuda::host_allocate_pinned(coefficient_arena));
    slot->coefficient_capacity = coefficient_arena;
    slot->pixels = static_cast<uint8_t*>(cuda::host_allocate_pinned(pixel_arena));
    slot->pixel_capacity = pixel_arena;
    pinned_bytes_ += coefficient_arena + pixel_arena;
    // The launcher waits on this event once per batch: blocking, so that it sleeps rather than
    // spinning a core the decode workers could use.
    cudaEvent_t uploaded;
    BAM_CUDA_CHECK(cudaEventCreateWithFlags(&uploaded, cudaEventDisableTiming | cudaEventBlockingSync));
    slot->upload_done = uploaded;
  }

  cudaStream_t stream;
  BAM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_ = stream;
  output_slots_.resize(kOutputSlots);
  const size_t out_elem = dtype_size(options_.gpu_output);
  for (OutputSlot& out : output_slots_) {
    for (size_t g = 0; g < groups_.views.size(); ++g) {
      const size_t bytes = out_elem * groups_.views[g] * batch_ * 3 * groups_.sizes[g] * groups_.sizes[g];
      out.groups.push_back(cuda::device_allocate_uncached(bytes, "the GPU loader's output crops"));
      output_bytes_ += bytes;
    }
    cudaEvent_t ready;
    BAM_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    out.ready = ready;
  }
  wait_timers_.resize(kWaitTimers);
  for (WaitTimer& t : wait_timers_) {
    // Timed, and waited on without spinning a core the decoding workers could use.
    cudaEvent_t before, after;
    BAM_CUDA_CHECK(cudaEventCreateWithFlags(&before, cudaEventBlockingSync));
    t.before = before;
    BAM_CUDA_CHECK(cudaEventCreateWithFlags(&after, cudaEventBlockingSync));
    t.after = after;
  }
  // The other device buffers are sized by the first batch's plan, and grown by a later batch that
  // needs more (ensure_device).
  ensure_device(&d_coefficients_, &coefficients_bytes_, coefficient_arena, "coefficients");
}

void GpuCropLoader::free_resources() {
  // The trainer's stream may still be reading the last batch from the output slots, and the
  // loader's stream may still be writing the next: both finish before anything is freed.
  cudaStreamSynchronize(as_stream(cuda::current_stream()));
  if (stream_) cudaStreamSynchronize(as_stream(stream_));
  for (OutputSlot& out : output_slots_) {
    for (void* p : out.groups) cudaFree(p);
    if (out.ready) cudaEventDestroy(as_event(out.ready));
  }
  output_slots_.clear();
  for (WaitTimer& t : wait_timers_)
    for (void* e : {t.before, t.after})
      if (e) cudaEventDestroy(as_event(e));
  wait_timers_.clear();
  for (void** p : {&d_coefficients_, &d_planes_, &d_rgb_, &d_tables_, &d_scratch_, &d_pixels_, &d_row_sums_,
                   &d_means_}) {
    if (*p) cudaFree(*p);
    *p = nullptr;
  }
  for (auto& slot : host_slots_) {
    if (!slot) continue;
    cuda::host_free_pinned(slot->coefficients);
    cuda::host_free_pinned(slot->pixels);
    if (slot->tables) cuda::host_free_pinned(slot->tables);
    if (slot->upload_done) cudaEventDestroy(as_event(slot->upload_done));
  }
  host_slots_.clear();
  if (stream_) cudaStreamDestroy(as_stream(stream_));
  stream_ = nullptr;
}

GpuCropLoader::~GpuCropLoader() {
  stop_threads();
  free_resources();
}

std::string GpuCropLoader::describe_buffers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const double device = static_cast<double>(output_bytes_ + coefficients_bytes_ + planes_bytes_ + rgb_bytes_ +
                                            tables_bytes_ + scratch_bytes_ + pixels_bytes_ + row_sums_bytes_ +
                                            means_bytes_);
  return fmt::format(
      "GPU loader: {} decode threads, {:.1f} MiB page-locked ({} slots), {:.1f} MiB device ({:.1f} MiB of it "
      "{} output crops){}{}",
      std::max(1, options_.threads), pinned_bytes_ / 1048576.0, host_slots_.size(), device / 1048576.0,
      output_bytes_ / 1048576.0, dtype_name(options_.gpu_output),
      coefficient_overflows_ ? fmt::format("; {} image{} over the coefficient arena decoded on the CPU",
                                           coefficient_overflows_.load(), coefficient_overflows_ == 1 ? "" : "s")
                             : "",
      pixel_overflows_ ? fmt::format("; {} image{} over the pixel arena uploaded from pageable memory",
                                     pixel_overflows_.load(), pixel_overflows_ == 1 ? "" : "s")
                       : "");
}

// Runs on the constructor's thread or the launcher thread, the only ones that touch the buffers;
// the mutex guards only the sizes, which describe_buffers() reads, so that the workers and next()
// do not wait while a buffer is reallocated.
void GpuCropLoader::ensure_device(void** ptr, int64_t* capacity, int64_t bytes, const char* what) {
  if (bytes <= *capacity) return;
  const bool growing = *capacity > 0;
  const int64_t size = align16(growing ? bytes * 5 / 4 : bytes);
  BAM_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream_)));  // earlier batches may still read it
  if (*ptr) BAM_CUDA_CHECK(cudaFree(*ptr));
  *ptr = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    *capacity = 0;
  }
  // Outside the engine's cache (this stream is not the engine's), which gives back its unused
  // blocks when the device is full.
  try {
    *ptr = cuda::device_allocate_uncached(static_cast<size_t>(size), what);
  } catch (const Error& e) {
    fail("GPU loader: {} (a smaller --batch_size_per_gpu, or --data_backend cpu, needs less)", e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    *capacity = size;
  }
  if (growing && size >= (int64_t{1} << 20))  // (small buffers grow quietly)
    std::fprintf(stderr, "GPU loader: device buffer for %s grown to %.1f MiB\n", what, size / 1048576.0);
}

int64_t GpuCropLoader::steps_per_epoch() const { return sequence_.steps_per_epoch(); }

int64_t GpuCropLoader::skipped_files() const { return unreadable_.count(); }

void GpuCropLoader::drop_prepared(std::unique_lock<std::mutex>& lock, int64_t first) {
  end_batch_ = next_.batch;
  launch_end_ = launch_next_;
  ++restarts_;
  lock.unlock();
  launched_.notify_all();
  slot_done_.notify_all();
  lock.lock();
  idle_.wait(lock, [&] { return active_ == 0 && !launching_; });
  // The trainer's work on the batches it holds is queued by now: their buffers are released after it.
  for (OutputSlot& out : output_slots_) {
    if (out.batch < 0) continue;
    out.released.record();
    out.batch = -1;
  }
  next_ = {first, 0};
  consumer_next_ = launch_next_ = first;
  for (auto& s : host_slots_) {
    s->batch = -1;
    s->done = 0;
    s->uploaded = true;
  }
  failure_.clear();
}

int64_t GpuCropLoader::work_end() const {
  return run_ahead_end(sequence_, consumer_end_, options_.epochs, boxes_.get());
}

void GpuCropLoader::start_epoch(int64_t epoch, int64_t first_step) {
  std::unique_lock<std::mutex> lock(mutex_);
  check_boxes_known(boxes_.get(), epoch);
  unreadable_.retry_all();
  const int64_t first = sequence_.start_number(epoch, first_step);
  // Not where the loader has got to (or it failed): drop what was prepared.
  if (first != consumer_next_ || failure_.any() || launcher_failure_) drop_prepared(lock, first);
  // (Continuing, the batch the trainer holds is released by the next next(), as within an epoch.)
  consumer_end_ = sequence_.number(epoch + 1, 0);
  end_batch_ = launch_end_ = work_end();
  lock.unlock();
  work_ready_.notify_all();
  slot_done_.notify_all();
}

void GpuCropLoader::set_epochs(int64_t epochs) {
  std::unique_lock<std::mutex> lock(mutex_);
  options_.epochs = epochs;
  end_batch_ = launch_end_ = work_end();  // once started: from now on
  lock.unlock();
  work_ready_.notify_all();
  slot_done_.notify_all();
}

void GpuCropLoader::set_object_boxes(std::shared_ptr<const ObjectBoxes> boxes) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (consumer_next_ < consumer_end_) check_boxes_known(boxes.get(), sequence_.epoch(consumer_next_));  // mid-epoch
  drop_prepared(lock, consumer_next_);  // prepared with the boxes before
  boxes_ = std::move(boxes);
  end_batch_ = launch_end_ = work_end();
  lock.unlock();
  work_ready_.notify_all();
  slot_done_.notify_all();
}

void GpuCropLoader::worker_loop() {
  for (;;) {
    int64_t g, b;
    HostSlot* slot;
    bool prepared;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto available = [&](int64_t g) {
        HostSlot& s = *host_slots_[g % host_slots_.size()];
        return s.batch == g || (s.uploaded && s.batch < g);
      };
      work_ready_.wait(lock, [&] { return stop_ || (next_.batch < end_batch_ && available(next_.batch)); });
      if (stop_) return;
      g = next_.batch;
      b = next_.row;
      next_.advance(sequence_);
      const int64_t rows = sequence_.rows(g);
      ++active_;
      slot = host_slots_[g % host_slots_.size()].get();
      if (slot->batch != g) {
        slot->batch = g;
        slot->done = 0;
        slot->uploaded = false;
        slot->coefficients_used = 0;
        slot->pixels_used = 0;
        slot->coefficients_missed = 0;
        slot->pixels_missed = 0;
        slot->prepared = false;
        try {  // allocations: a failure spoils the batch, as a worker's failure does below
          slot->order = sequence_.order(sequence_.epoch(g));
          slot->boxes = boxes_;
          slot->images.assign(rows, GpuBatchImage{});
          slot->pixel_offsets.assign(rows, -1);
          slot->overflow.assign(rows, {});
          slot->indices.assign(rows, -1);
          slot->crop_keys.assign(rows, -1);
          slot->labels.assign(rows, -1);
          slot->prepared = true;
        } catch (...) {
          failure_.note(g, std::current_exception());
        }
      }
      prepared = slot->prepared;
    }
    try {
      if (prepared) produce(g, b, *slot);  // else the batch is spoiled already
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failure_.note(g, std::current_exception());
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++slot->done;
      --active_;
    }
    slot_done_.notify_all();
    launched_.notify_all();
    idle_.notify_all();
  }
}

void GpuCropLoader::produce(int64_t batch, int64_t b, HostSlot& slot) {
  GpuBatchImage image;
  DecodedImage pixels;
  std::vector<int16_t> spilled;  // coefficients that did not fit the arena
  int64_t coef_offset = -1;
  int64_t reserved = 0;  // coefficient bytes taken in the arena at coef_offset
  int64_t missed = 0;    // coefficient bytes that did not fit the arena
  // A candidate that took arena space and then did not use it (refused as damaged, or decoded on the
  // CPU after all) gives it back, so that a damaged file does not push the next ones out of the arena.
  const auto unreserve = [&] {
    if (coef_offset >= 0) release_in_arena(slot.coefficients_used, coef_offset * 2, reserved);
    coef_offset = -1;
  };
  const int64_t position = sequence_.first_position(batch) + b;
  const int64_t index =
      unreadable_.first_decodable(*slot.order, position, dataset_.root, [&](int64_t candidate) {
        const std::string& path = dataset_.files[candidate];
        std::vector<uint8_t> bytes = read_image_file(path);
        coef_offset = -1;
        missed = 0;
        try {
          image = prepare_image_for_gpu(
              bytes.data(), bytes.size(), path,
              [&](const JpegLayout& layout) -> int16_t* {
                const int64_t need = align16(layout.num_coefficients * 2);
                const int64_t at = reserve_in_arena(slot.coefficients_used, need, slot.coefficient_capacity);
                if (at >= 0) {
                  coef_offset = at / 2;
                  reserved = need;
                  return slot.coefficients + coef_offset;
                }
                missed = need;
                spilled.assign(static_cast<size_t>(layout.num_coefficients), 0);
                return spilled.data();
              },
              &pixels);
        } catch (...) {
          unreserve();
          throw;
        }
        if (!image.decode_on_gpu) unreserve();
      });
  const bool reconstructed = image.decode_on_gpu && coef_offset < 0;
  if (reconstructed) {
    // The arena was full: reconstruct this one on the CPU from the coefficients it has. Its bytes
    // count toward the arena's growth; those of a file then refused (damaged, turned by Exif, too
    // long and thin) do not, since it never goes to the GPU.
    slot.coefficients_missed += missed;
    ++coefficient_overflows_;
    pixels.width = image.width;
    pixels.height = image.height;
    pixels.pixels.resize(size_t(image.width) * image.height * 3);
    jpeg_reconstruct_rgb(image.layout, spilled.data(), pixels.pixels.data());
    image.decode_on_gpu = false;
  }
  if (image.decode_on_gpu) {
    image.coef_offset = coef_offset;
    ++gpu_images_;
  } else {
    ++cpu_images_;
    const int64_t need = static_cast<int64_t>(pixels.pixels.size());
    const int64_t at = reserve_in_arena(slot.pixels_used, align16(need), slot.pixel_capacity);
    if (at >= 0) {
      std::memcpy(slot.pixels + at, pixels.pixels.data(), static_cast<size_t>(need));
      slot.pixel_offsets[b] = at;
    } else {
      // Uploaded from pageable memory. The pixel arena grows for files the CPU decodes anyway,
      // not for JPEGs that only missed the coefficient arena (which grows for them).
      ++pixel_overflows_;
      if (!reconstructed) slot.pixels_missed += align16(need);
      slot.overflow[b] = std::move(pixels.pixels);
    }
  }
  slot.images[b] = image;
  slot.indices[b] = index;
  slot.crop_keys[b] = (*slot.order)[static_cast<size_t>(position % static_cast<int64_t>(slot.order->size()))];
  slot.labels[b] = dataset_.labels[index];
}

void GpuCropLoader::launcher_loop() {
  try {
    BAM_CUDA_CHECK(cudaSetDevice(device_));
  } catch (...) {
    // No launcher from here on: start_epoch clears failure_, so the error is kept where next()
    // finds it in every epoch, rather than leaving next() to wait for batches nobody launches.
    std::lock_guard<std::mutex> lock(mutex_);
    launcher_failure_ = std::current_exception();
    launched_.notify_all();
    return;
  }
  for (;;) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto slot_ready = [&] {
      if (launch_next_ >= launch_end_ || failure_.spoils(launch_next_)) return false;
      const HostSlot& s = *host_slots_[launch_next_ % host_slots_.size()];
      return s.batch == launch_next_ && s.done == sequence_.rows(launch_next_);
    };
    slot_done_.wait(lock, [&] { return stop_ || slot_ready(); });
    if (stop_) return;
    const int64_t g = launch_next_, restarts = restarts_;
    // Output slot reuse: the trainer must have taken the batch after the one that used it last.
    launched_.wait(lock, [&] { return stop_ || restarts_ != restarts || consumer_next_ >= g - kOutputSlots + 2; });
    if (stop_) return;
    if (restarts_ != restarts) continue;
    launching_ = true;
    HostSlot& slot = *host_slots_[g % host_slots_.size()];
    OutputSlot& out = output_slots_[g % kOutputSlots];
    lock.unlock();
    std::exception_ptr error;
    try {
      launch(g, slot, out);
    } catch (...) {
      error = std::current_exception();
      // Copies queued before the failure may still read the slot's pinned memory, which the
      // workers reuse once it is marked uploaded: let them finish (their own error is moot now).
      cudaStreamSynchronize(as_stream(stream_));
    }
    lock.lock();
    if (error) failure_.note(g, error);
    slot.uploaded = true;
    if (!error) {
      out.batch = g;
      ++launch_next_;
    }
    launching_ = false;
    lock.unlock();
    launched_.notify_all();
    work_ready_.notify_all();
    idle_.notify_all();
  }
}

void GpuCropLoader::launch(int64_t batch, HostSlot& slot, OutputSlot& out) {
  const int64_t rows = sequence_.rows(batch);
  std::vector<std::pair<int, int>> sizes;
  for (const GpuBatchImage& im : slot.images) sizes.push_back({im.width, im.height});
  auto crops = options_.eval_transform ? eval_crop_tasks(recipe_, sizes, options_.eval_size, options_.eval_whole_image)
                                       : multi_crop_tasks(recipe_, sizes, slot.indices, seed_, sequence_.epoch(batch),
                                                          slot.boxes.get(), dataset_.first_index, slot.crop_keys);
  std::vector<int> group_sizes(groups_.sizes.begin(), groups_.sizes.end());
  const GpuBatchPlan plan = plan_gpu_batch(slot.images, group_sizes, crops);

  // The task tables, packed into the slot's pinned staging buffer.
  const int64_t block_bytes = align16(plan.block_tasks.size() * sizeof(cuda_kernels::JpegBlockTask));
  const int64_t pixel_bytes = align16(plan.pixel_tasks.size() * sizeof(cuda_kernels::JpegPixelTask));
  std::vector<int64_t> crop_at;
  int64_t table_bytes = block_bytes + pixel_bytes;
  for (const GpuCropGroup& g : plan.groups) {
    crop_at.push_back(table_bytes);
    table_bytes += align16(g.crops.size() * sizeof(cuda_kernels::CropTask));
  }
  if (table_bytes > slot.table_capacity) {
    // Forgotten before the new one is asked for: a failed allocation leaves no freed pointer
    // behind for a retried epoch to write into (or for free_resources to free again).
    if (slot.tables) cuda::host_free_pinned(slot.tables);
    slot.tables = nullptr;
    slot.table_capacity = 0;
    const int64_t capacity = align16(table_bytes * 5 / 4);
    slot.tables = static_cast<uint8_t*>(cuda::host_allocate_pinned(capacity));
    slot.table_capacity = capacity;
  }
  // (A table may be empty, e.g. no block tasks when every image was decoded on the CPU: its
  // data() may then be null, which memcpy must not be given even for no bytes.)
  auto pack = [&](int64_t at, const auto& table) {
    if (!table.empty()) std::memcpy(slot.tables + at, table.data(), table.size() * sizeof(table[0]));
  };
  pack(0, plan.block_tasks);
  pack(block_bytes, plan.pixel_tasks);
  for (size_t g = 0; g < plan.groups.size(); ++g) pack(crop_at[g], plan.groups[g].crops);

  // Device working memory (grown, with a note, when a batch needs more than any before).
  const int64_t coefficient_bytes = slot.coefficients_used.load();  // reserve_in_arena keeps it within the arena
  int64_t scratch = 0, pixels = 0, row_sums = 0, means = 0;
  for (const GpuCropGroup& g : plan.groups) {
    scratch = std::max(scratch, g.scratch_floats * 4);
    pixels = std::max(pixels, g.pixel_floats * 4);
    row_sums = std::max<int64_t>(row_sums, int64_t(g.crops.size()) * g.S * 8);
    means = std::max<int64_t>(means, int64_t(g.crops.size()) * 4);
  }
  ensure_device(&d_coefficients_, &coefficients_bytes_, coefficient_bytes, "coefficients");
  ensure_device(&d_planes_, &planes_bytes_, plan.plane_bytes, "component planes");
  ensure_device(&d_rgb_, &rgb_bytes_, plan.rgb_bytes, "decoded images");
  ensure_device(&d_tables_, &tables_bytes_, table_bytes, "task tables");
  ensure_device(&d_scratch_, &scratch_bytes_, scratch, "resize scratch");
  ensure_device(&d_pixels_, &pixels_bytes_, pixels, "crop pixels");
  ensure_device(&d_row_sums_, &row_sums_bytes_, row_sums, "row sums");
  ensure_device(&d_means_, &means_bytes_, means, "crop means");

  cudaStream_t stream = as_stream(stream_);
  if (coefficient_bytes > 0)
    BAM_CUDA_CHECK(cudaMemcpyAsync(d_coefficients_, slot.coefficients, coefficient_bytes, cudaMemcpyHostToDevice,
                                   stream));
  BAM_CUDA_CHECK(cudaMemcpyAsync(d_tables_, slot.tables, table_bytes, cudaMemcpyHostToDevice, stream));
  auto* rgb = static_cast<uint8_t*>(d_rgb_);
  for (int64_t b = 0; b < rows; ++b) {
    if (slot.images[b].decode_on_gpu) continue;
    const size_t bytes = size_t(slot.images[b].width) * slot.images[b].height * 3;
    const void* src = slot.pixel_offsets[b] >= 0 ? static_cast<const void*>(slot.pixels + slot.pixel_offsets[b])
                                                 : static_cast<const void*>(slot.overflow[b].data());
    BAM_CUDA_CHECK(cudaMemcpyAsync(rgb + plan.rgb_offsets[b], src, bytes, cudaMemcpyHostToDevice, stream));
  }
  BAM_CUDA_CHECK(cudaEventRecord(as_event(slot.upload_done), stream));

  auto* tables = static_cast<uint8_t*>(d_tables_);
  cuda_kernels::jpeg_idct_batch(reinterpret_cast<const cuda_kernels::JpegBlockTask*>(tables),
                                static_cast<int>(plan.block_tasks.size()), plan.total_blocks,
                                static_cast<const int16_t*>(d_coefficients_), static_cast<uint8_t*>(d_planes_), stream);
  cuda_kernels::jpeg_upsample_convert_batch(
      reinterpret_cast<const cuda_kernels::JpegPixelTask*>(tables + block_bytes),
      static_cast<int>(plan.pixel_tasks.size()), plan.total_pixels, static_cast<const uint8_t*>(d_planes_), rgb,
      stream);
  // Only the crop kernels write the output slot: the upload and the decode above run while the
  // trainer still reads this slot's previous batch, and the crops wait for its release.
  out.released.wait_on_stream(stream);
  const cuda_kernels::CropScratch scratch_view{static_cast<float*>(d_scratch_), static_cast<float*>(d_pixels_),
                                               static_cast<double*>(d_row_sums_), static_cast<float*>(d_means_)};
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    const GpuCropGroup& group = plan.groups[g];
    cuda_kernels::crop_batch_render(reinterpret_cast<const cuda_kernels::CropTask*>(tables + crop_at[g]),
                                    static_cast<int>(group.crops.size()), group.S, group.max_rows, rgb, normalize_,
                                    scratch_view, options_.gpu_output, out.groups[g], stream);
  }
  BAM_CUDA_CHECK(cudaEventRecord(as_event(out.ready), stream));
  out.indices = slot.indices;
  out.labels = slot.labels;
  out.requested = slot.crop_keys;
  // The host slot is free for the workers once its bytes are on the device.
  BAM_CUDA_CHECK(cudaEventSynchronize(as_event(slot.upload_done)));
  grow_host_arenas(slot);
}

void GpuCropLoader::grow_host_arenas(HostSlot& slot) {
  // Images that missed an arena were decoded on the CPU (coefficients) or uploaded from pageable
  // memory, a copy that waits for the loader's stream (pixels). The arenas start from a typical
  // file; a batch of larger files (or of many PNGs) raises every slot's size to what the batch
  // wanted and a quarter more, up to kMaxArenaBytes, and each slot grows after its next upload.
  if (growth_failed_) return;
  struct Arena {
    void** memory;
    int64_t* capacity;
    int64_t* target;
    int64_t wanted;
    const char* what;
  };
  const Arena arenas[] = {
      {reinterpret_cast<void**>(&slot.coefficients), &slot.coefficient_capacity, &coefficient_arena_target_,
       slot.coefficients_used.load() + slot.coefficients_missed.load(), "coefficients"},
      {reinterpret_cast<void**>(&slot.pixels), &slot.pixel_capacity, &pixel_arena_target_,
       slot.pixels_used.load() + slot.pixels_missed.load(), "pixels decoded on the CPU"},
  };
  for (const Arena& a : arenas) {
    const int64_t wanted = align16(std::min(kMaxArenaBytes, a.wanted * 5 / 4));
    if (a.wanted > *a.capacity && wanted > *a.target) {
      std::fprintf(stderr,
                   "GPU loader: page-locked arenas for %s grow from %.1f to %.1f MiB (each slot after its "
                   "next upload)\n",
                   a.what, *a.capacity / 1048576.0, wanted / 1048576.0);
      *a.target = wanted;
    }
    if (*a.target <= *a.capacity) continue;
    const int64_t size = *a.target;
    void* grown = nullptr;
    try {  // before freeing the old one, which a failure keeps
      grown = cuda::host_allocate_pinned(static_cast<size_t>(size));
    } catch (const std::exception& e) {
      // The batch is on the device already, and growing is only quicker: keep the arenas as
      // they are, and stop trying (every slot would fail the same way).
      std::fprintf(stderr, "GPU loader: the page-locked arena for %s stays at %.1f MiB (%s)\n", a.what,
                   *a.capacity / 1048576.0, e.what());
      growth_failed_ = true;
      return;
    }
    cuda::host_free_pinned(*a.memory);
    *a.memory = grown;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      pinned_bytes_ += static_cast<size_t>(size - *a.capacity);
    }
    *a.capacity = size;
  }
}

GpuCropLoader::Batch GpuCropLoader::next() {
  // The device wait timed kWaitTimers batches ago: the trainer's stream has passed it by now (it
  // is not waited for, but by a trainer that queued that many steps without reading any result).
  // Only this thread writes consumer_next_ and the timers, so neither needs the lock here.
  double device_wait = 0;
  WaitTimer& previous_timer = wait_timers_[static_cast<size_t>(consumer_next_ % kWaitTimers)];
  if (previous_timer.recorded) {
    BAM_CUDA_CHECK(cudaEventSynchronize(as_event(previous_timer.after)));
    float ms = 0;
    BAM_CUDA_CHECK(cudaEventElapsedTime(&ms, as_event(previous_timer.before), as_event(previous_timer.after)));
    device_wait = ms / 1000.0;
    previous_timer.recorded = false;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  const int64_t g = consumer_next_;
  BAM_CHECK(g < consumer_end_, "loader: no batch left in the epoch (call start_epoch)");
  // A failure stops launches at the batch it spoils (a worker's is noted before its batch is
  // complete, the launcher's under the lock that ends the launch): the batches before it are
  // whole and are returned first.
  launched_.wait(lock, [&] { return launcher_failure_ || launch_next_ > g || failure_.spoils(g); });
  if (launch_next_ <= g) {
    if (launcher_failure_) std::rethrow_exception(launcher_failure_);
    failure_.rethrow();
  }
  OutputSlot& out = output_slots_[g % kOutputSlots];
  void* compute = cuda::current_stream();
  // The stream waits for the batch's kernels on the device, which the host's wait above does not
  // see: timed between two events (read kWaitTimers batches later, at the top of next()).
  WaitTimer& timer = wait_timers_[static_cast<size_t>(g % kWaitTimers)];
  BAM_CUDA_CHECK(cudaEventRecord(as_event(timer.before), as_stream(compute)));
  BAM_CUDA_CHECK(cudaStreamWaitEvent(as_stream(compute), as_event(out.ready), 0));
  BAM_CUDA_CHECK(cudaEventRecord(as_event(timer.after), as_stream(compute)));
  timer.recorded = true;
  // The trainer's work on the previous batch (the last of the epoch before, too) is queued: its
  // buffers may be rewritten after it.
  if (g > 0) {
    OutputSlot& previous = output_slots_[(g - 1) % kOutputSlots];
    if (previous.batch == g - 1) previous.released.record();  // on `compute`, the current stream
  }
  const int64_t rows = sequence_.rows(g);
  Batch batch;
  for (size_t k = 0; k < groups_.views.size(); ++k) {
    const int64_t S = groups_.sizes[k];
    batch.groups.push_back(
        from_blob(out.groups[k], {groups_.views[k] * rows, 3, S, S}, options_.gpu_output, Device::cuda(device_)));
  }
  batch.indices = out.indices;
  batch.labels = out.labels;
  batch.requested = out.requested;
  ++consumer_next_;
  lock.unlock();
  launched_.notify_all();
  batch.device_wait_seconds = device_wait;
  return batch;
}

}  // namespace bam::data
