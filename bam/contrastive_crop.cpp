// The box renewal of ContrastiveCrop: whole images through the backbone, a box per attention map.
#include "bam/contrastive_crop.h"

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {

std::vector<data::ObjectBox> locate_objects(const VisionTransformer& backbone, const data::Dataset& dataset,
                                            const ObjectLocatorOptions& o) {
  const int64_t P = backbone.config().patch_size, S = o.image_size;
  BAM_CHECK(S % P == 0, "ContrastiveCrop: image size {} is not a multiple of the patch size {}", S, P);
  const int grid = static_cast<int>(S / P);
  data::LoaderOptions lo;
  lo.threads = o.threads;
  lo.drop_last = false;
  lo.shuffle = false;
  lo.eval_transform = true;
  lo.eval_whole_image = true;
  lo.eval_size = static_cast<int>(S);
  lo.backend = o.backend;
  std::unique_ptr<data::CropLoader> loader = data::make_crop_loader(dataset, o.recipe, o.batch_size, 0, lo);
  loader->start_epoch(0);
  const Device device = backbone.parameters().front().device();
  std::vector<data::ObjectBox> boxes(static_cast<size_t>(dataset.size()));
  for (int64_t step = 0; step < loader->steps_per_epoch(); ++step) {
    data::LoaderBatch batch = loader->next();
    Tensor maps;
    {
      NoGradGuard no_grad;
      Tensor probs = backbone.last_attention(batch.groups[0].to(device));  // [B, heads, N, N]
      // The CLS token's row, its attention to the patches, summed over the heads: [B, N - 1].
      const int64_t N = probs.size(2);
      maps = sum(probs.select(2, 0).narrow(2, 1, N - 1).to(DType::f32), {1}).to(Device::cpu()).contiguous();
    }
    BAM_CHECK(maps.size(1) == int64_t{grid} * grid, "ContrastiveCrop: {} patches for a {}x{} grid", maps.size(1), grid,
              grid);
    const float* m = maps.data<float>();
    for (size_t b = 0; b < batch.indices.size(); ++b)
      boxes[static_cast<size_t>(batch.indices[b])] =
          data::box_from_attention(m + b * grid * grid, grid, grid, static_cast<int>(S), o.threshold);
  }
  return boxes;
}

}  // namespace bam
