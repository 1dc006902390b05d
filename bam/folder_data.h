// Training data from an image folder or file list (the multi-crop loader of data/loader.h).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "bam/train_data.h"
#include "data/augment.h"

namespace bam {

struct TrainConfig;

// The augmentation recipe a run's flags describe.
data::AugmentRecipe recipe_from_config(const TrainConfig& config);
std::unique_ptr<TrainData> make_folder_data(const TrainConfig& config);

// A folder as given, "a/train/" as "a/train" (a trailing slash names the same folder): what its
// name and the folders beside it are read from (the .../train and .../val pair the kNN monitor
// and the report look for).
std::filesystem::path folder_path(const std::string& path);

}  // namespace bam
