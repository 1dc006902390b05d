// Multi-crop forward of backbone + projector.
#include "bam/bam_model.h"

#include "engine/error.h"

namespace bam {

BamModel::BamModel(const VitConfig& vit, const ProjectorConfig& projector, Generator* gen) {
  backbone = register_module("backbone", std::make_shared<VisionTransformer>(vit, gen));
  head = register_module("head", std::make_shared<Projector>(projector, gen));
}

Tensor BamModel::forward(const std::vector<Tensor>& groups) const {
  BAM_CHECK(!groups.empty(), "BamModel: no crops given");
  std::vector<Tensor> features;
  for (const Tensor& g : groups) features.push_back(backbone->forward(g));
  return head->forward(features.size() == 1 ? features[0] : cat(features, 0));
}

}  // namespace bam
