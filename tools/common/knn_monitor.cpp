// kNN monitor: both labelled folders are indexed once; each evaluation extracts features afresh.
#include "tools/common/knn_monitor.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "bam/evaluation_device.h"
#include "bam/features.h"
#include "bam/folder_data.h"
#include "bam/knn.h"
#include "data/dataset.h"
#include "data/image_error.h"
#include "engine/autocast.h"
#include "engine/distributed.h"
#include "engine/error.h"

namespace bam::tool {

std::pair<std::string, std::string> knn_monitor_folders(const TrainConfig& config) {
  if (config.knn_freq == 0 && !config.eval_first) return {};
  std::string train_path = config.knn_train_path, val_path = config.knn_val_path;
  // Default: an ImageFolder pair next to the training data (.../train and .../val).
  namespace fs = std::filesystem;
  if (train_path.empty() && folder_path(config.data_path).filename() == "train") train_path = config.data_path;
  if (val_path.empty() && !train_path.empty()) {
    fs::path sibling = folder_path(train_path).parent_path() / "val";
    if (fs::is_directory(sibling)) val_path = sibling.string();
  }
  BAM_CHECK(!train_path.empty() && !val_path.empty(),
            "{} needs labelled ImageFolders: pass --knn_train_path and --knn_val_path (or train on "
            ".../train with a .../val beside it)",
            config.knn_freq > 0 ? fmt::format("--knn_freq {}", config.knn_freq) : std::string("--eval_first"));
  return {train_path, val_path};
}

KnnMonitor make_knn_monitor(const TrainConfig& config, Communicator* group) {
  if (config.knn_freq == 0 && !config.eval_first) return {};
  const auto [train_path, val_path] = knn_monitor_folders(config);
  data::Dataset train, val;
  try {
    train = data::open_image_folder(train_path);
    val = data::open_image_folder(val_path);
  } catch (const data::ImageDecodeError& e) {
    fail("kNN monitor: {}", e.what());
  }
  if (const std::string mismatch = data::class_mismatch(train, val); !mismatch.empty())
    fail("kNN monitor: the train and val folders must have the same class folders: {}", mismatch);
  // The official monitor's balanced fractions; the same images at every evaluation.
  const int64_t train_all = train.size(), val_all = val.size();
  train = data::balanced_subset(train, config.knn_train_fraction, config.seed, "--knn_train_fraction");
  val = data::balanced_subset(val, config.knn_eval_fraction, config.seed + 1, "--knn_eval_fraction");
  std::printf("kNN monitor: %lld of %lld train / %lld of %lld val images in %lld classes, %s\n",
              static_cast<long long>(train.size()), static_cast<long long>(train_all),
              static_cast<long long>(val.size()), static_cast<long long>(val_all),
              static_cast<long long>(train.num_classes()),
              config.knn_freq > 0 ? fmt::format("every {} epochs", config.knn_freq).c_str() : "before training only");
  FeatureOptions options;
  options.img_size = config.global_crops_size;
  options.threads = static_cast<int>(std::max<int64_t>(1, config.num_workers));
  options.recipe = recipe_from_config(config);
  options.recipe.eval_resize_ratio = config.eval_resize_ratio;
  // The images through the training's data path: decoded and cropped on the GPU with --data_backend
  // gpu, as the box update's are.
  options.backend = config.data_backend == "gpu" ? data::DataBackend::gpu : data::DataBackend::cpu;
  const int64_t num_classes = train.num_classes();
  // Each rank evaluates its slice of both folders (all of them in one process).
  const bool several = group && group->world_size() > 1;
  const int64_t val_rows = val.size();
  if (several) {
    // Every rank extracts its slice of the same folders: the same file names and labels on each
    // machine (a node's own copy of the folders could differ, and mix the counts silently).
    check_ranks_agree(*group, data::dataset_listing(train) + data::dataset_listing(val), "kNN monitor images",
                      "every rank must read the same --knn_train_path and --knn_val_path files (a shared folder, or "
                      "copies at the same path)");
    train = data::contiguous_part(train, group->rank(), group->world_size());
    val = data::contiguous_part(val, group->rank(), group->world_size());
  }
  auto said = std::make_shared<std::string>();  // where the last evaluation ran
  // The features under the training's autocast policy (--precision): the monitor follows the
  // trend of a training that ran so, and its passes over the folders (tens of thousands of images,
  // an eighth of a short CPU run's budget in f32) take the 16-bit GEMMs' speed. The vote's
  // similarities stay f32, and so do bamprobe's figures.
  const DType compute = precision_dtype(config.precision);
  return [train, val, val_rows, options, num_classes, group, several, said,
          compute](const VisionTransformer& backbone) {
    FeatureSet tr, va;
    {
      AutocastGuard autocast(compute);
      tr = extract_features(&backbone, train, options);
      va = extract_features(&backbone, val, options);
    }
    // The vote runs on the backbone's GPU when the features fit there (the whole validation set
    // included, which every rank gathers).
    const Device backbone_device = backbone.parameters().front().device();
    const EvaluationDevice on =
        evaluation_device(backbone_device, knn_device_bytes(tr.features.size(0), val_rows, tr.features.size(1), 20));
    // Where it runs, said at the first evaluation and again when the devices change (not the
    // note's figures, which change between evaluations).
    const std::string key = backbone_device.str() + " " + on.device.str();
    if (key != *said)
      std::printf("kNN monitor: images through the %s loader, features on %s, the vote on %s\n",
                  options.backend == data::DataBackend::gpu ? "GPU" : "CPU", backbone_device.str().c_str(),
                  on.note.empty() ? "the host" : on.note.c_str());
    *said = key;
    tr.features = tr.features.to(on.device);  // the host's copy goes
    if (!several) return knn_classify(tr.features, tr.labels, va.features, va.labels, num_classes, 20, 0.07);
    return knn_classify_across_ranks(tr.features, tr.labels, va.features, va.labels, num_classes, *group, 20, 0.07);
  };
}

}  // namespace bam::tool
