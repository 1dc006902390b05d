// Vision Transformer with timm's parameter names (cls_token, pos_embed, patch_embed.proj.*,
// blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*), so an exported backbone
// loads into timm.create_model("vit_small_patch16_224", num_classes=0) with strict names.
// Shape letters: B images, C channels, H x W pixels, P patch size, N tokens (1 + patches), E width.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/layers.h"
#include "engine/module.h"

namespace bam {

class Generator;

struct VitConfig {
  int64_t embed_dim = 384;
  int64_t depth = 12;
  int64_t num_heads = 6;
  int64_t patch_size = 16;
  int64_t img_size = 224;  // the grid the position embedding is stored for
  int64_t in_chans = 3;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  double drop_path_rate = 0.0;  // stochastic depth, linearly increasing over blocks
  // The MLPs keep only fc1's output and recompute the GELU in backward (gelu_linear): one
  // [tokens, 4*dim] activation less per block for one more GELU pass. Same numbers either way.
  bool recompute_gelu = false;
  // > 0: activation checkpointing in training, the blocks in segments of this many, each keeping
  // only its input and recomputing its blocks in backward (engine/checkpoint.h; timm's
  // checkpoint_seq with every = n). One more forward of the blocks for their activations' memory.
  int64_t checkpoint_every = 0;
  // The official BAM ViT (models/vit.py of the paper's code, MoCo v3's stability measures) differs
  // from timm's default in three ways, each a choice here (timm's the default):
  //   pos_embed "sincos": a fixed 2-D sine-cosine table (not trained; the CLS position 0) instead
  //     of a learned one ("learned", trunc_normal .02);
  //   freeze_patch_embed: the patch projection keeps its random initialisation;
  //   weight_init "moco": the blocks' Linear weights xavier-uniform (qkv's as three matrices)
  //     instead of trunc_normal .02 ("trunc_normal").
  std::string pos_embed = "learned";
  bool freeze_patch_embed = false;
  std::string weight_init = "trunc_normal";
};

// MoCo v3's fixed position table for a grid x grid patch grid of width E (divisible by 4): the
// patch at row r, column c gets [sin(r w), cos(r w), sin(c w), cos(c w)] over the E/4 frequencies
// w_k = 10000^(-k / (E/4)); the CLS position is 0. [1, 1 + grid^2, E].
Tensor sincos_position_table(int64_t grid, int64_t E);

// "vit_tiny" (192/12/3), "vit_small" (384/12/6), "vit_base" (768/12/12); other fields default.
// Returns false for an unknown name.
bool vit_preset(const std::string& arch, VitConfig* config);

// Why `weights` (timm names) cannot be the backbone of `config`, from their shapes alone, or "": the
// width (cls_token), patch size (patch_embed.proj.weight), block count and position grid
// (pos_embed). Checked before a model is built from a file's metadata, which could ask for any size.
std::string vit_weights_mismatch(const NamedTensors& weights, const VitConfig& config);

class ViTAttention : public Module {
 public:
  ViTAttention(int64_t dim, int64_t heads, bool qkv_bias, Generator* gen);
  Tensor forward(const Tensor& x, Tensor* probs = nullptr) const;
  std::shared_ptr<Linear> qkv, proj;

 private:
  int64_t heads_;
};

class ViTMlp : public Module {
 public:
  ViTMlp(int64_t dim, int64_t hidden, bool recompute_gelu, Generator* gen);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> fc1, fc2;

 private:
  bool recompute_gelu_;
};

class ViTBlock : public Module {
 public:
  ViTBlock(int64_t dim, int64_t heads, double mlp_ratio, bool qkv_bias, double drop_path, bool recompute_gelu,
           Generator* gen);
  Tensor forward(const Tensor& x, Tensor* attention_probs = nullptr) const;
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<ViTAttention> attn;
  std::shared_ptr<ViTMlp> mlp;

 private:
  double drop_path_;
};

// The conv weight [E, C, P, P] and bias [E] of the patch embedding, applied as patchify + linear.
class PatchProjection : public Module {
 public:
  PatchProjection(int64_t in_chans, int64_t dim, int64_t patch, Generator* gen);
  Tensor forward(const Tensor& images) const;  // [B, C, H, W] -> [B, (H/P)*(W/P), E]
  Tensor weight, bias;

 private:
  int64_t patch_;
};

class VisionTransformer : public Module {
 public:
  VisionTransformer(const VitConfig& config, Generator* gen);
  const VitConfig& config() const { return config_; }

  // The CLS token after the final norm: [B, E]. Any H, W that are multiples of P (the position
  // embedding is resized bicubically when the grid differs from the stored one).
  Tensor forward(const Tensor& images) const;
  // The outputs of the last n blocks, each through the final norm: n tensors [B, N, E].
  std::vector<Tensor> forward_last_blocks(const Tensor& images, int64_t n) const;
  // The last block's attention weights [B, heads, N, N] (no gradient).
  Tensor last_attention(const Tensor& images) const;
  // The position embedding for a grid of gh x gw patches: [1, 1 + gh*gw, E].
  Tensor position_embedding(int64_t gh, int64_t gw) const;

  Tensor cls_token, pos_embed;
  std::shared_ptr<Module> patch_embed;
  std::shared_ptr<PatchProjection> patch_proj;
  std::vector<std::shared_ptr<ViTBlock>> blocks;
  std::shared_ptr<LayerNorm> norm;

 private:
  Tensor embed(const Tensor& images) const;  // tokens with CLS and position embedding
  VitConfig config_;
};

}  // namespace bam
