// The small training configuration the CPU and GPU training tests start from: a 2-block, 32-wide
// ViT on 16 px global and 8 px local crops of synthetic images, a few epochs, no checkpoints
// between epochs. Tests change what they exercise.
#pragma once

#include <string>

#include "bam/train_config.h"

namespace bam::test {

TrainConfig small_train_config(const std::string& output_dir);

}  // namespace bam::test
