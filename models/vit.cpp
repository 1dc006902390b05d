// The Vision Transformer: patch embedding, CLS token, position embedding (learned or the official
// BAM ViT's fixed sine-cosine table; bicubically resized for other input sizes), pre-norm blocks,
// final norm.
#include "models/vit.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/error.h"
#include "engine/random.h"
#include "engine/whole_number.h"

namespace bam {

namespace {
// A Module that only names a level of the tree ("blocks", "patch_embed").
class Container : public Module {
 public:
  template <typename M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> child) {
    return register_module(name, std::move(child));
  }
};
}  // namespace

bool vit_preset(const std::string& arch, VitConfig* config) {
  struct Preset {
    const char* name;
    int64_t dim, depth, heads;
  };
  static const Preset presets[] = {{"vit_tiny", 192, 12, 3}, {"vit_small", 384, 12, 6}, {"vit_base", 768, 12, 12}};
  for (const auto& p : presets)
    if (arch == p.name) {
      config->embed_dim = p.dim;
      config->depth = p.depth;
      config->num_heads = p.heads;
      return true;
    }
  return false;
}

ViTAttention::ViTAttention(int64_t dim, int64_t heads, bool qkv_bias, Generator* gen) : heads_(heads) {
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, qkv_bias, gen));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim, true, gen));
}

Tensor ViTAttention::forward(const Tensor& x, Tensor* probs) const {
  return proj->forward(attention(qkv->forward(x), heads_, probs));
}

ViTMlp::ViTMlp(int64_t dim, int64_t hidden, bool recompute_gelu, Generator* gen) : recompute_gelu_(recompute_gelu) {
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden, true, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim, true, gen));
}

Tensor ViTMlp::forward(const Tensor& x) const {
  Tensor h = fc1->forward(x);
  return recompute_gelu_ ? fc2->forward_of_gelu(h) : fc2->forward(gelu(h));
}

ViTBlock::ViTBlock(int64_t dim, int64_t heads, double mlp_ratio, bool qkv_bias, double drop_path, bool recompute_gelu,
                   Generator* gen)
    : drop_path_(drop_path) {
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(dim, 1e-6));
  attn = register_module("attn", std::make_shared<ViTAttention>(dim, heads, qkv_bias, gen));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(dim, 1e-6));
  mlp = register_module("mlp",
                        std::make_shared<ViTMlp>(dim, static_cast<int64_t>(dim * mlp_ratio), recompute_gelu, gen));
}

Tensor ViTBlock::forward(const Tensor& x, Tensor* attention_probs) const {
  // The residual stream keeps its dtype (f32 under autocast). Each branch starts at a LayerNorm that
  // writes the 16-bit compute type and comes back in it; residual_add adds it into the stream.
  Tensor branch = attn->forward(norm1->forward_compute(x), attention_probs);
  Tensor y = residual_add(x, drop_path(branch, drop_path_, is_training()));
  return residual_add(y, drop_path(mlp->forward(norm2->forward_compute(y)), drop_path_, is_training()));
}

PatchProjection::PatchProjection(int64_t in_chans, int64_t dim, int64_t patch, Generator* gen) : patch_(patch) {
  // PyTorch's Conv2d default: uniform in +-1/sqrt(fan_in) for weight and bias.
  double bound = 1.0 / std::sqrt(static_cast<double>(in_chans * patch * patch));
  weight = register_parameter("weight", sub(mul(rand({dim, in_chans, patch, patch}, {}, gen), 2 * bound), bound));
  bias = register_parameter("bias", sub(mul(rand({dim}, {}, gen), 2 * bound), bound));
}

Tensor PatchProjection::forward(const Tensor& images) const {
  Tensor patches = patchify(autocast_compute(images), patch_);
  return linear(patches, autocast_compute(weight.view({weight.size(0), -1})), autocast_compute(bias));
}

VisionTransformer::VisionTransformer(const VitConfig& c, Generator* gen) : config_(c) {
  BAM_CHECK(c.embed_dim >= 1 && c.num_heads >= 1 && c.depth >= 1 && c.patch_size >= 1 && c.in_chans >= 1,
            "ViT: embed_dim {}, depth {}, num_heads {}, patch_size {} and in_chans {} must all be positive",
            c.embed_dim, c.depth, c.num_heads, c.patch_size, c.in_chans);
  BAM_CHECK(c.embed_dim % c.num_heads == 0, "ViT: embed_dim {} is not divisible by num_heads {}", c.embed_dim,
            c.num_heads);
  BAM_CHECK(c.img_size % c.patch_size == 0, "ViT: img_size {} is not a multiple of the patch size {}", c.img_size,
            c.patch_size);
  const int64_t grid = c.img_size / c.patch_size, E = c.embed_dim;
  auto patch_container = std::make_shared<Container>();
  patch_proj = patch_container->add("proj", std::make_shared<PatchProjection>(c.in_chans, E, c.patch_size, gen));
  patch_embed = register_module("patch_embed", std::static_pointer_cast<Module>(patch_container));
  BAM_CHECK(c.pos_embed == "learned" || c.pos_embed == "sincos", "ViT: --pos_embed must be learned or sincos, got '{}'",
            c.pos_embed);
  BAM_CHECK(c.pos_embed != "sincos" || E % 4 == 0, "ViT: --pos_embed sincos needs a width divisible by 4, got {}", E);
  BAM_CHECK(c.weight_init == "trunc_normal" || c.weight_init == "moco",
            "ViT: --weight_init must be trunc_normal or moco, got '{}'", c.weight_init);
  cls_token = register_parameter("cls_token", mul(randn({1, 1, E}, {}, gen), 1e-6));
  // Drawn either way, so that the blocks get the same draws with either table.
  pos_embed = register_parameter("pos_embed", trunc_normal({1, 1 + grid * grid, E}, 0.0, 0.02, -2.0, 2.0, {}, gen));
  if (c.pos_embed == "sincos") {
    NoGradGuard no_grad;
    pos_embed.copy_(sincos_position_table(grid, E));
    pos_embed.requires_grad_(false);  // no gradient, no optimizer state, no weight decay
  }
  if (c.freeze_patch_embed) {
    patch_proj->weight.requires_grad_(false);
    patch_proj->bias.requires_grad_(false);
  }
  auto block_container = std::make_shared<Container>();
  for (int64_t i = 0; i < c.depth; ++i) {
    double rate = c.depth > 1 ? c.drop_path_rate * static_cast<double>(i) / (c.depth - 1) : 0.0;
    blocks.push_back(block_container->add(
        std::to_string(i),
        std::make_shared<ViTBlock>(E, c.num_heads, c.mlp_ratio, c.qkv_bias, rate, c.recompute_gelu, gen)));
  }
  register_module("blocks", std::static_pointer_cast<Module>(block_container));
  norm = register_module("norm", std::make_shared<LayerNorm>(E, 1e-6));
  if (c.weight_init == "moco") {
    // timm's init_weights_vit_moco: xavier-uniform, U(+-sqrt(6 / (fan_in + fan_out))), with qkv's
    // fan_out that of one of its three matrices. Biases stay 0.
    NoGradGuard no_grad;
    for (const auto& block : blocks)
      for (const auto& [layer, thirds] : {std::pair{block->attn->qkv, true}, std::pair{block->attn->proj, false},
                                          std::pair{block->mlp->fc1, false}, std::pair{block->mlp->fc2, false}}) {
        const int64_t out = layer->weight.size(0), in = layer->weight.size(1);
        const double bound = std::sqrt(6.0 / static_cast<double>((thirds ? out / 3 : out) + in));
        layer->weight.copy_(sub(mul(rand({out, in}, {}, gen), 2 * bound), bound));
      }
  }
}

Tensor sincos_position_table(int64_t grid, int64_t E) {
  BAM_CHECK(E % 4 == 0 && grid >= 1, "sincos_position_table: width {} must be divisible by 4", E);
  const int64_t quarter = E / 4;
  std::vector<float> table(static_cast<size_t>((1 + grid * grid) * E), 0.0f);  // row 0: the CLS position
  for (int64_t r = 0; r < grid; ++r)
    for (int64_t col = 0; col < grid; ++col) {
      float* row = &table[static_cast<size_t>((1 + r * grid + col) * E)];
      for (int64_t k = 0; k < quarter; ++k) {
        // In f32, as torch computes the official table.
        const float omega = 1.0f / std::pow(10000.0f, static_cast<float>(k) / static_cast<float>(quarter));
        const float a = static_cast<float>(r) * omega, b = static_cast<float>(col) * omega;
        row[k] = std::sin(a);
        row[quarter + k] = std::cos(a);
        row[2 * quarter + k] = std::sin(b);
        row[3 * quarter + k] = std::cos(b);
      }
    }
  return from_vector(table, {1, 1 + grid * grid, E});
}

Tensor VisionTransformer::position_embedding(int64_t gh, int64_t gw) const {
  const int64_t grid = config_.img_size / config_.patch_size, E = config_.embed_dim;
  if (gh == grid && gw == grid) return pos_embed;
  Tensor cls_pos = pos_embed.narrow(1, 0, 1);
  Tensor patch_pos = pos_embed.narrow(1, 1, grid * grid).reshape({1, grid, grid, E}).permute({0, 3, 1, 2});
  Tensor resized = interpolate_bicubic(patch_pos, gh, gw).permute({0, 2, 3, 1}).reshape({1, gh * gw, E});
  return cat({cls_pos, resized}, 1);
}

Tensor VisionTransformer::embed(const Tensor& images) const {
  BAM_CHECK(images.dim() == 4 && images.size(1) == config_.in_chans,
            "ViT: expects images [B, {}, H, W], got {}", config_.in_chans, images.describe());
  const int64_t P = config_.patch_size, B = images.size(0);
  BAM_CHECK(images.size(2) >= P && images.size(3) >= P, "ViT: image {}x{} is smaller than the patch size {}",
            images.size(2), images.size(3), P);
  Tensor tokens = patch_proj->forward(images).to(cls_token.dtype());  // 16-bit under autocast
  Tensor cls = cls_token.expand({B, 1, config_.embed_dim});
  return add(cat({cls, tokens}, 1), position_embedding(images.size(2) / P, images.size(3) / P));
}

Tensor VisionTransformer::forward(const Tensor& images) const {
  Tensor x = embed(images);
  const size_t every = static_cast<size_t>(config_.checkpoint_every);
  if (every == 0 || !is_training()) {
    for (const auto& block : blocks) x = block->forward(x);
  } else {
    for (size_t begin = 0; begin < blocks.size(); begin += every) {
      const size_t end = std::min(blocks.size(), begin + every);
      std::vector<Tensor> parameters;
      for (size_t i = begin; i < end; ++i)
        for (Tensor& p : blocks[i]->parameters()) parameters.push_back(std::move(p));
      // The blocks themselves, not `this`: backward may run the segment again.
      auto segment = [segment_blocks = std::vector(blocks.begin() + begin, blocks.begin() + end)](const Tensor& input) {
        Tensor y = input;
        for (const auto& block : segment_blocks) y = block->forward(y);
        return y;
      };
      x = checkpoint("checkpointed_blocks", segment, x, parameters);
    }
  }
  return norm->forward(x.select(1, 0));
}

std::vector<Tensor> VisionTransformer::forward_last_blocks(const Tensor& images, int64_t n) const {
  BAM_CHECK(n >= 1 && n <= config_.depth, "ViT: asked for the last {} blocks of {}", n, config_.depth);
  Tensor x = embed(images);
  std::vector<Tensor> outputs;
  for (size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i]->forward(x);
    if (static_cast<int64_t>(i) >= config_.depth - n) outputs.push_back(norm->forward(x));
  }
  return outputs;
}

Tensor VisionTransformer::last_attention(const Tensor& images) const {
  NoGradGuard no_grad;
  Tensor x = embed(images);
  for (size_t i = 0; i + 1 < blocks.size(); ++i) x = blocks[i]->forward(x);
  Tensor probs;
  blocks.back()->forward(x, &probs);
  return probs;
}

std::string vit_weights_mismatch(const NamedTensors& weights, const VitConfig& config) {
  const Tensor* cls = nullptr;
  const Tensor* patch = nullptr;
  const Tensor* pos = nullptr;
  std::set<int64_t> blocks;
  for (const auto& [name, t] : weights) {
    if (name == "cls_token") cls = &t;
    if (name == "patch_embed.proj.weight") patch = &t;
    if (name == "pos_embed") pos = &t;
    if (name.rfind("blocks.", 0) == 0) {
      const size_t dot = name.find('.', 7);
      const std::optional<int64_t> i = parse_whole_number(name.substr(7, dot - 7), 0, int64_t{1} << 20);
      if (i) blocks.insert(*i);
    }
  }
  const int64_t E = config.embed_dim, P = config.patch_size, grid = config.img_size / config.patch_size;
  if (!cls || !patch || !pos)
    return "no cls_token, patch_embed.proj.weight or pos_embed: not a ViT backbone under timm names";
  if (cls->shape() != Shape{1, 1, E})
    return fmt::format("cls_token is {}: a ViT {} wide has [1, 1, {}]", shape_str(cls->shape()), E, E);
  if (patch->shape() != Shape{E, config.in_chans, P, P})
    return fmt::format("patch_embed.proj.weight is {}: patches of {} pixels make it [{}, {}, {}, {}]",
                       shape_str(patch->shape()), P, E, config.in_chans, P, P);
  if (static_cast<int64_t>(blocks.size()) != config.depth)
    return fmt::format("the weights hold {} blocks, the configuration {}", blocks.size(), config.depth);
  if (pos->shape() != Shape{1, 1 + grid * grid, E})
    return fmt::format("pos_embed is {}: a {} x {} grid of patches ({} px) makes it [1, {}, {}]",
                       shape_str(pos->shape()), grid, grid, config.img_size, 1 + grid * grid, E);
  return "";
}

}  // namespace bam
