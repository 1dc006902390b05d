// The trained network: a ViT backbone and the projector, run multi-crop style (DINO's
// MultiCropWrapper): one backbone pass per crop resolution, features concatenated in crop order,
// then one projector pass. Parameter names: backbone.<timm name>, head.projector.<i>.<...>.
#pragma once

#include <memory>
#include <vector>

#include "models/projector.h"
#include "models/vit.h"

namespace bam {

class BamModel : public Module {
 public:
  BamModel(const VitConfig& vit, const ProjectorConfig& projector, Generator* gen);
  // groups: per resolution, [n_views * B, C, H, W], crop-major; returns z [V * B, out_dim].
  Tensor forward(const std::vector<Tensor>& groups) const;
  std::shared_ptr<VisionTransformer> backbone;
  std::shared_ptr<Projector> head;
};

}  // namespace bam
