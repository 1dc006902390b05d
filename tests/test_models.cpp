// Models: ViT output shapes at several input sizes, the position-embedding interpolation (identity
// at the native grid, bicubic elsewhere), timm parameter names and shapes, the projector's
// structure, the multi-crop forward, gradients reaching every parameter, and checkpointed blocks.
#include <cmath>
#include <map>
#include <set>

#include "bam/bam_model.h"
#include "engine/autograd.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "engine/storage.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {
VitConfig tiny_vit() { return tiny_vit_config(4, 16, 24, 3); }
}  // namespace

TEST_CASE("ViT output shapes at several input sizes") {
  Generator gen(1);
  VisionTransformer vit(tiny_vit(), &gen);
  vit.train(false);
  for (int64_t size : {16, 8, 12, 28}) {
    CAPTURE(size);
    Tensor x = randn({3, 3, size, size}, {}, &gen);
    CHECK(vit.forward(x).shape() == Shape{3, 24});
    auto last = vit.forward_last_blocks(x, 2);
    REQUIRE(last.size() == 2);
    int64_t tokens = 1 + (size / 4) * (size / 4);
    CHECK(last[1].shape() == Shape{3, tokens, 24});
    CHECK(vit.last_attention(x).shape() == Shape{3, 3, tokens, tokens});
  }
  // Non-square inputs too.
  CHECK(vit.forward(randn({2, 3, 8, 20}, {}, &gen)).shape() == Shape{2, 24});
  CHECK_THROWS_WITH_AS(vit.forward(randn({1, 1, 16, 16})), doctest::Contains("expects images [B, 3, H, W]"), Error);
  CHECK_THROWS_AS(vit.forward_last_blocks(randn({1, 3, 16, 16}), 3), Error);
  // The CLS output equals the last block's normalised first token.
  Tensor x = randn({2, 3, 16, 16}, {}, &gen);
  CHECK(vit.forward(x).to_vector<float>() == vit.forward_last_blocks(x, 1)[0].select(1, 0).contiguous().to_vector<float>());
  // A zero in the configuration (an exported backbone's metadata, a flag) is an error, not a
  // division by zero.
  for (int field = 0; field < 4; ++field) {
    VitConfig bad = tiny_vit();
    (field == 0 ? bad.patch_size : field == 1 ? bad.num_heads : field == 2 ? bad.embed_dim : bad.depth) = 0;
    CHECK_THROWS_WITH_AS(VisionTransformer(bad, &gen), doctest::Contains("must all be positive"), Error);
  }
}

TEST_CASE("layers without a bias (--qkv_bias false, --proj_bias false) run forward and backward") {
  Generator gen(5);
  VitConfig c = tiny_vit();
  c.qkv_bias = false;
  VisionTransformer vit(c, &gen);
  Linear plain(24, 8, false, &gen);
  Tensor x = randn({2, 3, 16, 16}, {}, &gen);
  Tensor y = plain.forward(vit.forward(x));
  CHECK(y.shape() == Shape{2, 8});
  sum(y).backward();
  CHECK(plain.weight.grad().defined());
  CHECK(!plain.bias.defined());
}

TEST_CASE("recomputing the MLP's GELU in backward gives the same outputs and gradients, bit for bit") {
  auto run = [](bool recompute) {
    Generator gen(9);
    VitConfig c = tiny_vit();
    c.recompute_gelu = recompute;
    VisionTransformer vit(c, &gen);
    Tensor x = randn({2, 3, 16, 16}, {}, &gen);
    Tensor y = vit.forward(x);
    sum(mul(y, y)).backward();
    std::vector<std::vector<float>> values{y.to_vector<float>()};
    for (const auto& [name, p] : vit.named_parameters()) values.push_back(p.grad().to_vector<float>());
    return values;
  };
  std::vector<std::vector<float>> kept = run(false), recomputed = run(true);
  REQUIRE(kept.size() == recomputed.size());
  for (size_t i = 0; i < kept.size(); ++i) CHECK(kept[i] == recomputed[i]);
}

TEST_CASE("checkpointed blocks give the same outputs, gradients and drop-path draws, and keep less memory") {
  // Five blocks with stochastic depth, so the recomputation must replay the drop-path masks.
  struct Run {
    std::vector<std::vector<float>> values;
    uint64_t rng_offset_after = 0;
    size_t bytes_held_by_graph = 0;  // CPU bytes alive between forward and backward
  };
  auto run = [](int64_t every) {
    Generator gen(11);
    VitConfig c = tiny_vit();
    c.depth = 5;
    c.drop_path_rate = 0.5;
    c.checkpoint_every = every;
    VisionTransformer vit(c, &gen);
    Tensor x = randn({8, 3, 16, 16}, {}, &gen);
    manual_seed(5);
    Run r;
    const size_t before = cpu_bytes_in_use();
    Tensor y = vit.forward(x);
    r.bytes_held_by_graph = cpu_bytes_in_use() - before;
    manual_seed(99);  // a reseed before backward must not change the masks the recomputation draws
    sum(mul(y, y)).backward();
    r.rng_offset_after = default_generator().offset();
    r.values.push_back(y.to_vector<float>());
    for (const auto& [name, p] : vit.named_parameters()) {
      REQUIRE_MESSAGE(p.grad().defined(), name);
      r.values.push_back(p.grad().to_vector<float>());
    }
    return r;
  };
  const Run plain = run(0);
  for (int64_t every : {1, 2, 5, 9}) {
    CAPTURE(every);
    const Run checkpointed = run(every);
    REQUIRE(checkpointed.values.size() == plain.values.size());
    for (size_t i = 0; i < plain.values.size(); ++i) CHECK(checkpointed.values[i] == plain.values[i]);
    // The recomputation puts the generator back where backward found it (seed 99).
    CHECK(checkpointed.rng_offset_after == plain.rng_offset_after);
    // Only the segments' inputs are kept: a fraction of what the plain graph holds.
    CHECK(checkpointed.bytes_held_by_graph * 2 < plain.bytes_held_by_graph);
  }
  // Under NoGradGuard (the teacher, evaluation) the blocks simply run.
  Generator gen(11);
  VitConfig c = tiny_vit();
  c.checkpoint_every = 1;
  VisionTransformer vit(c, &gen);
  Tensor x = randn({2, 3, 16, 16}, {}, &gen);
  NoGradGuard no_grad;
  CHECK(!vit.forward(x).requires_grad());
}

TEST_CASE("position embedding: identity at the native grid, bicubic elsewhere") {
  Generator gen(2);
  VisionTransformer vit(tiny_vit(), &gen);
  CHECK(vit.position_embedding(4, 4).same(vit.pos_embed));
  Tensor resized = vit.position_embedding(2, 3);
  CHECK(resized.shape() == Shape{1, 7, 24});
  // The CLS position passes through untouched; patch positions are the bicubic resize of the grid.
  CHECK(resized.narrow(1, 0, 1).contiguous().to_vector<float>() == vit.pos_embed.narrow(1, 0, 1).contiguous().to_vector<float>());
  Tensor grid = vit.pos_embed.narrow(1, 1, 16).reshape({1, 4, 4, 24}).permute({0, 3, 1, 2});
  Tensor expected = interpolate_bicubic(grid, 2, 3).permute({0, 2, 3, 1}).reshape({1, 6, 24});
  CHECK(resized.narrow(1, 1, 6).contiguous().to_vector<float>() == expected.contiguous().to_vector<float>());
  // A constant grid stays constant (the bicubic weights sum to one).
  Tensor constant = full({1, 2, 4, 4}, 0.25);
  for (float v : interpolate_bicubic(constant, 7, 5).to_vector<float>()) CHECK(v == doctest::Approx(0.25f));
}

TEST_CASE("bicubic matches hand-computed PyTorch values") {
  // interpolate([1, 2], size=4, mode="bicubic", align_corners=False) along one axis:
  // taps at -0.25, 0.25, 0.75, 1.25 with a = -0.75 give these exactly (derivation in the op table).
  Tensor x = from_vector(std::vector<float>{1, 2}, {1, 1, 1, 2});
  auto y = interpolate_bicubic(x, 1, 4).to_vector<float>();
  CHECK(y[0] == doctest::Approx(0.89453125));
  CHECK(y[1] == doctest::Approx(1.2265625));
  CHECK(y[2] == doctest::Approx(1.7734375));
  CHECK(y[3] == doctest::Approx(2.10546875));
}

TEST_CASE("ViT parameters carry timm's names and shapes") {
  Generator gen(3);
  VitConfig v;
  REQUIRE(vit_preset("vit_small", &v));
  v.depth = 2;  // names repeat per block; two blocks keep the test quick
  VisionTransformer vit(v, &gen);
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : vit.named_parameters()) shapes[name] = t.shape();
  CHECK(shapes.size() == 4 + 2 + 12 * 2);
  CHECK(shapes.at("cls_token") == Shape{1, 1, 384});
  CHECK(shapes.at("pos_embed") == Shape{1, 197, 384});
  CHECK(shapes.at("patch_embed.proj.weight") == Shape{384, 3, 16, 16});
  CHECK(shapes.at("patch_embed.proj.bias") == Shape{384});
  CHECK(shapes.at("blocks.1.norm1.weight") == Shape{384});
  CHECK(shapes.at("blocks.1.attn.qkv.weight") == Shape{1152, 384});
  CHECK(shapes.at("blocks.1.attn.qkv.bias") == Shape{1152});
  CHECK(shapes.at("blocks.1.attn.proj.weight") == Shape{384, 384});
  CHECK(shapes.at("blocks.0.mlp.fc1.weight") == Shape{1536, 384});
  CHECK(shapes.at("blocks.0.mlp.fc2.bias") == Shape{384});
  CHECK(shapes.at("norm.weight") == Shape{384});
  // timm's initialisation: truncated normal(0.02) weights, zero biases, unit LayerNorm.
  for (auto& [name, t] : vit.named_parameters()) {
    if (name == "blocks.0.attn.qkv.weight") {
      double sd = std::sqrt(var(t.reshape({-1}), {0}).item());
      CHECK(sd == doctest::Approx(0.02).epsilon(0.05));
    }
    if (name == "blocks.0.attn.qkv.bias") CHECK(sum(abs(t)).item() == 0.0);
    if (name == "norm.weight") CHECK(mean(t).item() == 1.0);
  }
  VitConfig unknown;
  CHECK_FALSE(vit_preset("vit_huge", &unknown));
}

TEST_CASE("the official BAM ViT's choices: fixed sin-cos positions, a frozen patch projection, MoCo's init") {
  // The table: MoCo v3's build_2d_sincos_position_embedding (the patch at row r, column c), by hand.
  const Tensor table = sincos_position_table(3, 8);
  REQUIRE(table.shape() == Shape{1, 10, 8});
  const std::vector<float> t = table.to_vector<float>();
  for (int k = 0; k < 8; ++k) CHECK(t[k] == 0.0f);  // the CLS position
  const int r = 2, c = 1;
  const float* patch = &t[(1 + r * 3 + c) * 8];
  for (int k = 0; k < 2; ++k) {
    const double w = std::pow(10000.0, -k / 2.0);
    CHECK(patch[k] == doctest::Approx(std::sin(r * w)).epsilon(1e-6));
    CHECK(patch[2 + k] == doctest::Approx(std::cos(r * w)).epsilon(1e-6));
    CHECK(patch[4 + k] == doctest::Approx(std::sin(c * w)).epsilon(1e-6));
    CHECK(patch[6 + k] == doctest::Approx(std::cos(c * w)).epsilon(1e-6));
  }

  VitConfig official = tiny_vit_config(4, 16, 24, 3);
  official.pos_embed = "sincos";
  official.freeze_patch_embed = true;
  official.weight_init = "moco";
  Generator gen(5);
  VisionTransformer vit(official, &gen);
  CHECK(vit.pos_embed.to_vector<float>() == sincos_position_table(4, 24).to_vector<float>());
  // MoCo's xavier-uniform: U(+-sqrt(6 / (fan_in + fan_out))), qkv as three 24 x 24 matrices; the
  // standard deviation of U(+-b) is b / sqrt(3).
  auto sd = [](const Tensor& w) { return std::sqrt(var(w.reshape({-1}), {0}).item()); };
  const double qkv_bound = std::sqrt(6.0 / (24 + 24)), fc1_bound = std::sqrt(6.0 / (24 + 96));
  CHECK(sd(vit.blocks[0]->attn->qkv->weight) == doctest::Approx(qkv_bound / std::sqrt(3.0)).epsilon(0.1));
  CHECK(sd(vit.blocks[1]->mlp->fc1->weight) == doctest::Approx(fc1_bound / std::sqrt(3.0)).epsilon(0.1));
  CHECK(max(abs(vit.blocks[0]->attn->qkv->weight)).item() <= qkv_bound);
  CHECK(sum(abs(vit.blocks[0]->attn->qkv->bias)).item() == 0.0);

  // Neither the table nor the patch projection is trained: no gradient, no optimizer state.
  std::set<std::string> trained;
  for (const ParamGroup& g : make_param_groups(vit.named_parameters()))
    for (const auto& [name, p] : g.params) trained.insert(name);
  CHECK(trained.count("pos_embed") == 0);
  CHECK(trained.count("patch_embed.proj.weight") == 0);
  CHECK(trained.count("patch_embed.proj.bias") == 0);
  CHECK(trained.count("cls_token") == 1);
  const Tensor patch_before = vit.patch_proj->weight.clone(), pos_before = vit.pos_embed.clone();
  auto optimizer = make_optimizer("adamw", make_param_groups(vit.named_parameters()));
  optimizer->set_lr(0.1);
  sum(vit.forward(randn({2, 3, 16, 16}, {}, &gen))).backward();
  CHECK_FALSE(vit.patch_proj->weight.grad().defined());
  CHECK_FALSE(vit.pos_embed.grad().defined());
  optimizer->step();
  CHECK(vit.patch_proj->weight.to_vector<float>() == patch_before.to_vector<float>());
  CHECK(vit.pos_embed.to_vector<float>() == pos_before.to_vector<float>());
  VitConfig odd = official;
  odd.embed_dim = 18;
  odd.num_heads = 3;
  CHECK_THROWS_WITH_AS(VisionTransformer(odd, &gen), doctest::Contains("sincos needs a width divisible by 4"), Error);
}

TEST_CASE("projector structure follows the official head") {
  Generator gen(4);
  ProjectorConfig p;
  p.in_dim = 8;
  p.hidden_dim = 16;
  p.out_dim = 12;
  Projector head(p, &gen);
  std::set<std::string> names;
  for (auto& [name, t] : head.state()) names.insert(name);
  // Linear(0) BN(1) GELU(2) Linear(3) BN(4) GELU(5) Linear(6) BN-no-affine(7)
  std::set<std::string> expected = {"projector.0.weight", "projector.0.bias", "projector.1.weight", "projector.1.bias",
                                    "projector.1.running_mean", "projector.1.running_var", "projector.3.weight",
                                    "projector.3.bias", "projector.4.weight", "projector.4.bias",
                                    "projector.4.running_mean", "projector.4.running_var", "projector.6.weight",
                                    "projector.6.bias", "projector.7.running_mean", "projector.7.running_var"};
  CHECK(names == expected);
  Tensor out = head.forward(randn({10, 8}, {}, &gen));
  CHECK(out.shape() == Shape{10, 12});
  // The last BN has no affine: in training mode each output column has mean 0 and variance 1.
  auto m = mean(out, {0}).to_vector<float>();
  for (float v : m) CHECK(std::abs(v) < 1e-5);
  // The batch variance is var / (var + eps) of the column before it: just under 1, by eps = 1e-5
  // over that variance (about 1e-3 here, with the head's 0.02-std weights).
  const auto values = out.to_vector<float>();
  for (int64_t col = 0; col < 12; ++col) {
    double sum_squares = 0;
    for (int64_t row = 0; row < 10; ++row) sum_squares += double(values[row * 12 + col]) * values[row * 12 + col];
    CHECK(sum_squares / 10 <= 1.0 + 1e-6);
    CHECK(sum_squares / 10 >= 0.95);
  }
  p.use_bn = false;
  p.n_layers = 1;
  Projector plain(p, &gen);
  CHECK(plain.named_parameters().size() == 2);
}

TEST_CASE("multi-crop model: one backbone pass per resolution, gradients reach every parameter") {
  Generator gen(5);
  ProjectorConfig p;
  p.in_dim = 24;
  p.hidden_dim = 32;
  p.out_dim = 16;
  BamModel model(tiny_vit(), p, &gen);
  Tensor global = randn({2 * 4, 3, 16, 16}, {}, &gen), local = randn({3 * 4, 3, 8, 8}, {}, &gen);
  Tensor z = model.forward({global, local});
  CHECK(z.shape() == Shape{20, 16});
  sum(square(z)).backward();
  for (auto& [name, t] : model.named_parameters()) {
    CAPTURE(name);
    REQUIRE(t.grad().defined());
    CHECK(sum(abs(t.grad())).item() > 0);
  }
}

}  // namespace bam::test
