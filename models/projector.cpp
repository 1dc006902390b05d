// Projector construction (numbering children like the official nn.Sequential) and forward.
#include "models/projector.h"

#include "engine/error.h"

namespace bam {

namespace {
class Sequence : public Module {
 public:
  template <typename M>
  std::shared_ptr<M> add(int index, std::shared_ptr<M> child) {
    return register_module(std::to_string(index), std::move(child));
  }
};
}  // namespace

Projector::Projector(const ProjectorConfig& c, Generator* gen) : config_(c) {
  BAM_CHECK(c.n_layers >= 1, "projector: n_layers must be at least 1, got {}", c.n_layers);
  BAM_CHECK(c.activation == "gelu" || c.activation == "relu", "projector: activation must be gelu or relu, got '{}'",
            c.activation);
  auto seq = std::make_shared<Sequence>();
  int index = 0;  // the official Sequential also counts the activation modules
  for (int64_t i = 0; i < c.n_layers; ++i) {
    bool last = i == c.n_layers - 1;
    int64_t in = i == 0 ? c.in_dim : c.hidden_dim, out = last ? c.out_dim : c.hidden_dim;
    Stage stage;
    stage.linear = seq->add(index++, std::make_shared<Linear>(in, out, c.bias, gen));
    linears_.push_back(stage.linear);
    if (!last) {
      if (c.use_bn) stage.bn = seq->add(index++, std::make_shared<BatchNorm1d>(out, true));
      stage.activation = true;
      ++index;
    } else {
      if (c.use_bn && c.last_bn) stage.bn = seq->add(index++, std::make_shared<BatchNorm1d>(out, false));
      stage.activation = false;
    }
    stages_.push_back(stage);
  }
  register_module("projector", std::static_pointer_cast<Module>(seq));
}

Tensor Projector::forward(const Tensor& x) const {
  Tensor h = x;
  for (const Stage& s : stages_) {
    h = s.linear->forward(h);
    if (s.bn) h = s.bn->forward(h);
    if (s.activation) h = config_.activation == "gelu" ? gelu(h) : relu(h);
  }
  return h;
}

}  // namespace bam
