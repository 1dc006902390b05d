// The small training configuration the CPU and GPU training tests start from: a 2-block, 32-wide
// ViT on 16 px global and 8 px local crops of synthetic images, a few epochs, no checkpoints
// between epochs (tests change what they exercise); and a small labelled folder of image files.
#pragma once

#include <string>

#include "bam/contrastive_crop.h"
#include "bam/train_config.h"
#include "bam/trainer.h"

namespace bam::test {

TrainConfig small_train_config(const std::string& output_dir);

// A Trainer of `c` on the data it names (make_train_data), run: what the run returns.
TrainResult train(const TrainConfig& c);

// A ViT small enough for any test: 2 blocks of `embed_dim` with `heads` heads, on img_size-pixel
// images in patch_size-pixel patches.
VitConfig tiny_vit_config(int64_t patch_size, int64_t img_size, int64_t embed_dim = 32, int64_t heads = 2);

// A folder of `classes` x `per_class` JPEGs in the process's scratch folder (scratch_dir(name),
// emptied first), ImageFolder layout: class c's images are noisy versions of one colour (red,
// green, blue, yellow), 12 to 20 px on a side. Returns its path.
std::string write_colour_folder(const std::string& name, int classes, int per_class, uint64_t seed);

// ContrastiveCrop's box update on test-sized images: batches of 4, 2 loader threads. An untrained
// model's attention is nearly flat, so only a high `threshold` (its peaks) makes a small box.
ObjectLocatorOptions small_locator_options(int64_t image_size, double threshold);

}  // namespace bam::test
