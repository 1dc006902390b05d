// Feature extraction through the loader (evaluation transform, fixed order) and the backbone.
#include "bam/features.h"

#include <cstdio>

#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {

FeatureSet extract_features(const VisionTransformer* backbone, const data::Dataset& dataset,
                            const FeatureOptions& o) {
  NoGradGuard no_grad;
  if (dataset.size() == 0) {  // a rank's empty part of a small folder: no rows, of the usual width
    const int64_t width = backbone ? backbone->config().embed_dim * (o.n_last_blocks + (o.avgpool_patchtokens ? 1 : 0))
                                   : 3 * o.img_size * o.img_size;
    return {zeros({0, width}, {DType::f32, Device::cpu()}), zeros({0}, {DType::i64, Device::cpu()}),
            dataset.num_classes()};
  }
  data::LoaderOptions lo;
  lo.threads = o.threads;
  lo.drop_last = false;
  lo.shuffle = false;
  data::AugmentRecipe recipe = o.recipe;
  if (o.augment) {
    recipe.global_crops = 1;
    recipe.local_crops = 0;
    recipe.global_size = o.img_size;
    recipe.crop_and_flip_only = true;
  } else {
    lo.eval_transform = true;
    lo.eval_size = static_cast<int>(o.img_size);
  }
  lo.backend = o.backend;
  std::unique_ptr<data::CropLoader> loader = data::make_crop_loader(dataset, recipe, o.batch_size, o.seed, lo);
  loader->start_epoch(o.epoch);
  std::vector<Tensor> chunks;
  std::vector<int64_t> labels;
  std::vector<int64_t> keep;  // the rows of images that were decoded themselves (not a stand-in)
  // Images go to the backbone's device; features come back to the host for kNN and the probe.
  const Device device = backbone ? backbone->parameters().front().device() : Device::cpu();
  for (int64_t step = 0; step < loader->steps_per_epoch(); ++step) {
    data::LoaderBatch batch = loader->next();
    Tensor images = batch.groups[0];
    Tensor f;
    if (!backbone) {
      f = images.reshape({images.size(0), -1}).clone();
    } else {
      std::vector<Tensor> blocks = backbone->forward_last_blocks(images.to(device), o.n_last_blocks);
      std::vector<Tensor> parts;
      for (const Tensor& b : blocks) parts.push_back(b.select(1, 0));
      if (o.avgpool_patchtokens) parts.push_back(mean(blocks.back().narrow(1, 1, blocks.back().size(1) - 1), {1}));
      f = parts.size() == 1 ? parts[0].contiguous() : cat(parts, 1);
    }
    chunks.push_back(f.to(Device::cpu()));
    labels.insert(labels.end(), batch.labels.begin(), batch.labels.end());
    const auto first_row = static_cast<int64_t>(labels.size() - batch.indices.size());
    for (size_t b = 0; b < batch.indices.size(); ++b)
      if (batch.requested[b] == batch.indices[b]) keep.push_back(first_row + static_cast<int64_t>(b));
  }
  FeatureSet out;
  out.features = chunks.size() == 1 ? chunks[0] : cat(chunks, 0);
  out.labels = from_vector(labels, {static_cast<int64_t>(labels.size())});
  if (keep.size() < labels.size()) {
    // An image that could not be decoded (reported by the loader) is left out, not counted twice
    // through the image that stood in for it, with that image's label: the sets then hold the
    // folder's decodable images once each, on any number of ranks.
    const Tensor rows = from_vector(keep, {static_cast<int64_t>(keep.size())});
    out.features = index_select(out.features, 0, rows);
    out.labels = index_select(out.labels, 0, rows);
    const size_t left_out = labels.size() - keep.size();
    std::printf("note: %s: %zu image%s that could not be decoded left out of the features\n", dataset.root.c_str(),
                left_out, left_out == 1 ? "" : "s");
  }
  out.num_classes = dataset.num_classes();
  return out;
}

}  // namespace bam
