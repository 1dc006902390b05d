// Layer construction and initialisation.
#include "engine/layers.h"

#include "engine/autocast.h"
#include "engine/distributed.h"
#include "engine/random.h"

namespace bam {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator* gen) {
  weight = register_parameter("weight", trunc_normal({out_features, in_features}, 0.0, 0.02, -2.0, 2.0, {}, gen));
  if (with_bias) bias = register_parameter("bias", zeros({out_features}));
}

Tensor Linear::forward(const Tensor& x) const {
  return linear(autocast_compute(x), autocast_compute(weight), autocast_compute(bias));
}

Tensor Linear::forward_of_gelu(const Tensor& h) const {
  return gelu_linear(autocast_compute(h), autocast_compute(weight), autocast_compute(bias));
}

LayerNorm::LayerNorm(int64_t features, double eps) : eps_(eps) {
  weight = register_parameter("weight", ones({features}));
  bias = register_parameter("bias", zeros({features}));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(autocast_f32(x), weight, bias, eps_); }

Tensor LayerNorm::forward_compute(const Tensor& x) const {
  Tensor x32 = autocast_f32(x);
  const DType compute = autocast_compute_dtype(x32);
  // The fused form takes f32 in and 16 bits out (or one dtype); an f64 model under autocast casts.
  if (x32.dtype() == DType::f32 || compute == x32.dtype()) return layer_norm(x32, weight, bias, eps_, compute);
  return layer_norm(x32, weight, bias, eps_).to(compute);
}

BatchNorm1d::BatchNorm1d(int64_t features, bool affine, double momentum, double eps)
    : momentum_(momentum), eps_(eps) {
  if (affine) {
    weight = register_parameter("weight", ones({features}));
    bias = register_parameter("bias", zeros({features}));
  }
  running_mean = register_buffer("running_mean", zeros({features}));
  running_var = register_buffer("running_var", ones({features}));
}

Tensor BatchNorm1d::forward(const Tensor& x) const {
  if (Communicator* group = process_group(); group && group->world_size() > 1 && is_training())
    return batch_norm_across_ranks(autocast_f32(x), weight, bias, running_mean, running_var, momentum_, eps_, *group);
  return batch_norm(autocast_f32(x), weight, bias, running_mean, running_var, is_training(), momentum_, eps_);
}

}  // namespace bam
