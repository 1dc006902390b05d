// The BAM projector: an MLP of n_layers Linear layers with optional BatchNorm1d and GELU/ReLU
// between them, and an optional affine-free BatchNorm on the output. Child names follow the
// official head's nn.Sequential indices (projector.0.weight, projector.1.running_mean, ...).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/layers.h"

namespace bam {

struct ProjectorConfig {
  int64_t in_dim = 384;
  int64_t hidden_dim = 4096;
  int64_t out_dim = 4096;
  int64_t n_layers = 3;
  bool use_bn = true;
  bool last_bn = true;
  bool bias = true;
  std::string activation = "gelu";  // or "relu"
};

class Projector : public Module {
 public:
  Projector(const ProjectorConfig& config, Generator* gen);
  Tensor forward(const Tensor& x) const;  // [rows, in_dim] -> [rows, out_dim]
  const ProjectorConfig& config() const { return config_; }
  // The final Linear layer (frozen for the first epochs with --freeze_last_layer).
  std::shared_ptr<Linear> last_linear() const { return linears_.back(); }

 private:
  struct Stage {
    std::shared_ptr<Linear> linear;
    std::shared_ptr<BatchNorm1d> bn;  // may be null
    bool activation;
  };
  ProjectorConfig config_;
  std::vector<Stage> stages_;
  std::vector<std::shared_ptr<Linear>> linears_;
};

}  // namespace bam
