// `bamtool loss`: the BAM loss and its gradient for embeddings stored in a safetensors file, for
// checking parity with another implementation (the PyTorch formulation, for instance).
#include <cstdio>

#include "bam/bam_loss.h"
#include "engine/error.h"
#include "engine/safetensors.h"
#include "tools/bamtool/commands.h"

namespace bam::tool {
namespace {

struct LossOptions {
  std::string embeddings, grad_out;
  int64_t n_global = 2, n_local = 0, target_crops = 0, num_sink_iter = 3, top_k_sink = 0;
  double reg = 0.05, temperature = 0.1;
  bool positive_masking = true;
};

int run_loss(const LossOptions& o) {
  SafetensorsFile file = load_safetensors(o.embeddings);
  const Tensor* z = file.find("z");
  BAM_CHECK(z, "{}: no tensor named 'z' (expected the [V*B, D] f32 embeddings)", o.embeddings);
  BAM_CHECK(z->dtype() == DType::f32 && z->dim() == 2, "{}: 'z' must be a 2-d f32 tensor, got {}", o.embeddings,
            z->describe());
  const Tensor* teacher = file.find("z_teacher");
  BamLossOptions options;
  options.n_global = o.n_global;
  options.n_local = o.n_local;
  options.target_crops = o.target_crops > 0 ? o.target_crops : o.n_global;
  options.temperature = o.temperature;
  options.num_sink_iter = o.num_sink_iter;
  options.top_k = o.top_k_sink;
  options.positive_masking = o.positive_masking;
  Tensor input = z->clone().requires_grad_(true);
  BamLossResult r = bam_loss(input, o.reg, options, teacher ? *teacher : Tensor());
  std::printf("loss %.9g\n", r.loss.item());
  std::printf("target entropy %.6g\n", r.target_entropy.item());
  if (!o.grad_out.empty()) {
    r.loss.backward();
    save_safetensors(o.grad_out, {{"grad_z", input.grad()}}, {{"format", "pt"}});
    std::printf("wrote grad_z to %s\n", o.grad_out.c_str());
  }
  return 0;
}

}  // namespace

Action add_loss(CLI::App& app) {
  auto o = std::make_shared<LossOptions>();
  CLI::App* sub = app.add_subcommand("loss", "BAM loss (and gradient) of stored embeddings z [V*B, D], crop-major");
  sub->add_option("--emb", o->embeddings, "safetensors file with 'z' (and optionally 'z_teacher')")->required();
  sub->add_option("--n_global", o->n_global, "global views")->required()->check(positive_number);
  sub->add_option("--n_local", o->n_local, "local views")->required()->check(non_negative_number);
  sub->add_option("--target_crops", o->target_crops, "target views (default: n_global)")->check(positive_number);
  sub->add_option("--reg", o->reg, "Sinkhorn eps")->default_val(o->reg)->check(positive_number);
  sub->add_option("--temperature", o->temperature, "source temperature")
      ->default_val(o->temperature)
      ->check(positive_number);
  sub->add_option("--num_sink_iter", o->num_sink_iter, "Sinkhorn iterations")->default_val(o->num_sink_iter);
  sub->add_option("--top_k_sink", o->top_k_sink, "top-k target entries (0: all)")->default_val(o->top_k_sink);
  sub->add_option("--positive_masking", o->positive_masking, "mask same-image pairs")->type_name("BOOL")->default_val("true");
  sub->add_option("--grad_out", o->grad_out, "write d loss / d z here as 'grad_z'");
  return [o] { return run_loss(*o); };
}

}  // namespace bam::tool
