// Activation checkpointing (engine/checkpoint.h): one recorded node per segment, whose backward
// recomputes the segment with recording on and runs a nested backward through it.
#include "engine/checkpoint.h"

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/random.h"

namespace bam {
namespace {

// Puts the default generator back where the forward found it (key and position) for the
// recomputation, and returns it to where backward found it afterwards, also when the segment throws.
class ReplayDefaultGenerator {
 public:
  ReplayDefaultGenerator(uint64_t seed, uint64_t offset)
      : generator_(default_generator()), seed_(generator_.seed()), offset_(generator_.offset()) {
    generator_.manual_seed(seed);
    generator_.set_offset(offset);
  }
  ~ReplayDefaultGenerator() {
    generator_.manual_seed(seed_);
    generator_.set_offset(offset_);
  }
  ReplayDefaultGenerator(const ReplayDefaultGenerator&) = delete;
  ReplayDefaultGenerator& operator=(const ReplayDefaultGenerator&) = delete;

 private:
  Generator& generator_;
  uint64_t seed_, offset_;
};

}  // namespace

Tensor checkpoint(const char* name, std::function<Tensor(const Tensor&)> segment, const Tensor& x,
                  const std::vector<Tensor>& parameters) {
  std::vector<Tensor> inputs{x};
  inputs.insert(inputs.end(), parameters.begin(), parameters.end());
  if (!any_requires_grad(inputs)) return segment(x);

  // What the recomputation must see again.
  const DType compute_dtype = autocast_dtype();
  const uint64_t rng_seed = default_generator().seed(), rng_offset = default_generator().offset();
  const bool input_requires_grad = x.requires_grad();
  Tensor output;
  {
    NoGradGuard no_grad;
    output = segment(x);
  }
  const size_t count = inputs.size();
  return record(name, output, std::move(inputs),
                [segment = std::move(segment), saved = x.detach(), compute_dtype, rng_seed, rng_offset,
                 input_requires_grad, count](const Tensor& grad_output) {
                  Tensor input = saved.detach();
                  input.requires_grad_(input_requires_grad);
                  Tensor recomputed;
                  {
                    EnableGradGuard recording;
                    AutocastGuard autocast(compute_dtype);
                    ReplayDefaultGenerator replay(rng_seed, rng_offset);
                    recomputed = segment(input);
                  }
                  std::vector<Tensor> grads(count);
                  // The parameters' gradients accumulate into their .grad here, during the nested
                  // backward; the node returns only the input's.
                  if (recomputed.requires_grad()) {
                    run_backward(recomputed, grad_output, /*retain_graph=*/false);
                    if (input.requires_grad()) grads[0] = input.grad();
                  }
                  return grads;
                });
}

}  // namespace bam
