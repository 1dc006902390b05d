// TrainData over an image folder or file list: the multi-crop loader with the run's recipe.
#include "bam/folder_data.h"

#include "bam/train_config.h"
#include "data/loader.h"
#include "engine/error.h"

namespace bam {

data::AugmentRecipe recipe_from_config(const TrainConfig& c) {
  data::AugmentRecipe r;
  r.global_crops = c.global_crops_number;
  r.local_crops = c.local_crops_number;
  r.global_size = c.global_crops_size;
  r.local_size = c.local_crops_size;
  r.global_scale_min = c.global_crops_scale.first;
  r.global_scale_max = c.global_crops_scale.second;
  r.local_scale_min = c.local_crops_scale.first;
  r.local_scale_max = c.local_crops_scale.second;
  return r;
}

namespace {

data::LoaderOptions loader_options(const TrainConfig& c) {
  data::LoaderOptions o;
  o.threads = static_cast<int>(std::max<int64_t>(1, c.num_workers));
  o.prefetch = 2;
  o.drop_last = true;
  o.backend = c.data_backend == "gpu" ? data::DataBackend::gpu : data::DataBackend::cpu;
  // Under bf16 autocast the patch embedding reads bf16 images: the GPU path writes its crops in
  // bf16 directly, which halves their memory and saves the model's cast. fp16 and f32 take f32.
  o.gpu_output = c.precision == "bf16" ? DType::bf16 : DType::f32;
  o.shard = {static_cast<int>(c.rank), static_cast<int>(c.world_size)};
  return o;
}

class FolderData : public TrainData {
 public:
  FolderData(const TrainConfig& c, data::Dataset dataset)
      : loader_(data::make_crop_loader(std::move(dataset), recipe_from_config(c), c.batch_size_per_gpu,
                                       static_cast<uint64_t>(c.seed), loader_options(c))) {}
  int64_t num_images() const override { return loader_->dataset().size(); }
  int64_t steps_per_epoch() const override { return loader_->steps_per_epoch(); }
  void start_epoch(int64_t epoch, int64_t first_step) override { loader_->start_epoch(epoch, first_step); }
  void set_epochs(int64_t epochs) override { loader_->set_epochs(epochs); }
  CropBatch next() override {
    data::LoaderBatch b = loader_->next();
    CropBatch out;
    out.groups = std::move(b.groups);
    out.batch_size = static_cast<int64_t>(b.indices.size());
    out.device_wait_seconds = b.device_wait_seconds;
    return out;
  }
  const data::Dataset* images() const override { return &loader_->dataset(); }
  void set_object_boxes(std::shared_ptr<const data::ObjectBoxes> boxes) override {
    loader_->set_object_boxes(std::move(boxes));
  }
  std::string describe() const override {
    const auto& d = loader_->dataset();
    return fmt::format("{}: {} images{}; {}{}", d.root, d.size(),
                       d.num_classes() > 0 ? fmt::format(" in {} classes (labels unused)", d.num_classes()) : "",
                       loader_->describe_buffers(), loader_->skipped_files() ? " (some files skipped)" : "");
  }

 private:
  std::unique_ptr<data::CropLoader> loader_;
};

}  // namespace

std::unique_ptr<TrainData> make_folder_data(const TrainConfig& config) {
  return std::make_unique<FolderData>(config, data::open_dataset(config.data_path));
}

std::filesystem::path folder_path(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

}  // namespace bam
