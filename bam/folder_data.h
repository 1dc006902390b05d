// Training data from an image folder or file list (the multi-crop loader of data/loader.h).
#pragma once

#include <memory>

#include "bam/train_data.h"
#include "data/augment.h"

namespace bam {

struct TrainConfig;

// The augmentation recipe a run's flags describe.
data::AugmentRecipe recipe_from_config(const TrainConfig& config);
std::unique_ptr<TrainData> make_folder_data(const TrainConfig& config);

}  // namespace bam
