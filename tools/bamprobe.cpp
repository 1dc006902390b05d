// bamprobe: linear and kNN evaluation of a frozen backbone (DINO's eval_linear / eval_knn
// protocol, DESIGN.md section 6), printed beside the same protocol on raw pixels and on a
// randomly initialised backbone of the same architecture.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bam/checkpoint.h"
#include "bam/evaluation_device.h"
#include "bam/features.h"
#include "bam/linear_probe.h"
#include "bam/output_dir.h"
#include "data/image_error.h"
#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/host_allocator.h"
#include "engine/random.h"
#include "engine/safetensors.h"
#include "engine/whole_number.h"
#include "kernels/cpu/parallel.h"
#include "tools/common/available_memory.h"
#include "tools/common/device_choice.h"
#include "tools/common/environment.h"
#include "tools/common/flag_checks.h"
#include "tools/common/launcher.h"
#include "tools/common/official_flags.h"
#include "tools/common/rank_group.h"

namespace {

struct ProbeConfig {
  std::string pretrained_weights, checkpoint_key = "student", arch = "vit_small";
  int64_t patch_size = 16, embed_dim = 0, depth = 0, num_heads = 0;
  int64_t n_last_blocks = 4;
  bool avgpool_patchtokens = false, bn_head = false, linear_aug = false, baselines = true;
  bool patch_size_given = false, arch_given = false;  // on the command line (a file's values win, with a note)
  int64_t epochs = 100, batch_size_per_gpu = 128, nb_knn = 20, img_size = 224, num_workers = 4, seed = 0;
  int64_t val_freq = 1;  // DINO's: the linear probe validated after every epoch, its best reported beside the last
  double lr = 0.001, temperature = 0.07, eval_resize_ratio = 256.0 / 224.0;
  std::string data_path, output_dir = ".", mode = "both", device = "auto", data_backend = "auto";
};

struct Row {
  explicit Row(std::string n = {}) : name(std::move(n)) {}
  std::string name;
  bam::KnnResult knn{-1, -1}, linear{-1, -1};
  bam::LinearProbeBest linear_best;
};

// The backbone to evaluate: a bamtrain checkpoint, an exported backbone, or random init (empty path).
// The architecture flags make the random init's; a file's own architecture (a checkpoint's
// arguments, an export's metadata) wins over them, with a note where a flag given says otherwise.
std::unique_ptr<bam::VisionTransformer> load_backbone(const ProbeConfig& c, std::string* description) {
  bam::VitConfig v;
  if (c.arch != "custom") BAM_CHECK(bam::vit_preset(c.arch, &v), "--arch: unknown architecture '{}'", c.arch);
  v.patch_size = c.patch_size;
  v.img_size = c.img_size;
  if (c.embed_dim > 0) v.embed_dim = c.embed_dim;
  if (c.depth > 0) v.depth = c.depth;
  if (c.num_heads > 0) v.num_heads = c.num_heads;
  // The file's value for one architecture flag: a note if the flag was given otherwise.
  const auto take = [&](const char* flag, bool given, int64_t* value, int64_t from_file) {
    if (given && *value != from_file)
      std::printf("note: %s %lld differs from %s's %lld, which is used\n", flag, static_cast<long long>(*value),
                  c.pretrained_weights.c_str(), static_cast<long long>(from_file));
    *value = from_file;
  };
  bam::NamedTensors weights;
  if (!c.pretrained_weights.empty()) {
    bam::SafetensorsFile file = bam::load_safetensors(c.pretrained_weights);
    if (file.metadata.count("bam_checkpoint")) {
      // Read once: the checkpoint is made of the file already in memory.
      bam::LoadedCheckpoint ck = bam::checkpoint_from_file(std::move(file), c.pretrained_weights);
      weights = bam::backbone_from_checkpoint(ck, c.checkpoint_key == "teacher");
      const bam::VitConfig saved = ck.config.vit();
      take("--embed_dim", c.embed_dim > 0, &v.embed_dim, saved.embed_dim);
      take("--depth", c.depth > 0, &v.depth, saved.depth);
      take("--num_heads", c.num_heads > 0, &v.num_heads, saved.num_heads);
      take("--patch_size", c.patch_size_given, &v.patch_size, saved.patch_size);
      v = saved;
      *description = fmt::format("{} ({}, epoch {})", c.pretrained_weights, c.checkpoint_key, ck.state.epoch);
    } else {
      weights = std::move(file.tensors);  // an exported backbone: timm names at the top level
      if (const std::string bad = bam::first_non_finite(weights); !bad.empty())
        bam::fail(
            "--pretrained_weights {}: {} is NaN or infinite: the weights of a diverged run, whose features "
            "and accuracies would mean nothing",
            c.pretrained_weights, bad);
      if (c.checkpoint_key == "teacher")
        std::printf("note: --checkpoint_key teacher has no effect: %s is an exported backbone (one set of weights)\n",
                    c.pretrained_weights.c_str());
      auto number = [&](const char* key, const char* flag, bool given, int64_t* value) {
        if (!file.metadata.count(key)) return;
        const std::optional<int64_t> n = bam::parse_whole_number(file.metadata.at(key), 1, int64_t{1} << 20);
        BAM_CHECK(n.has_value(), "--pretrained_weights {}: its metadata {} is '{}', not a positive whole number",
                  c.pretrained_weights, key, file.metadata.at(key));
        take(flag, given, value, *n);
      };
      number("embed_dim", "--embed_dim", c.embed_dim > 0, &v.embed_dim);
      number("depth", "--depth", c.depth > 0, &v.depth);
      number("num_heads", "--num_heads", c.num_heads > 0, &v.num_heads);
      number("patch_size", "--patch_size", c.patch_size_given, &v.patch_size);
      number("img_size", "--img_size", false, &v.img_size);
      *description = c.pretrained_weights;
      // From the shapes, before a model of the asked-for size is built (backbone_from_checkpoint
      // checks a checkpoint's the same way).
      if (const std::string mismatch = bam::vit_weights_mismatch(weights, v); !mismatch.empty())
        bam::fail("--pretrained_weights {}: {}", c.pretrained_weights, mismatch);
    }
    // --arch given beside a file of another size: the sizes the preset alone sets (a size flag
    // given beside it had its own note above).
    bam::VitConfig preset;
    if (c.arch_given && c.arch != "custom" && bam::vit_preset(c.arch, &preset) &&
        ((c.embed_dim == 0 && preset.embed_dim != v.embed_dim) || (c.depth == 0 && preset.depth != v.depth) ||
         (c.num_heads == 0 && preset.num_heads != v.num_heads)))
      std::printf(
          "note: --arch %s (width %lld, depth %lld, %lld heads) differs from %s's width %lld, depth %lld, "
          "%lld heads, which are used\n",
          c.arch.c_str(), static_cast<long long>(preset.embed_dim), static_cast<long long>(preset.depth),
          static_cast<long long>(preset.num_heads), c.pretrained_weights.c_str(), static_cast<long long>(v.embed_dim),
          static_cast<long long>(v.depth), static_cast<long long>(v.num_heads));
  } else {
    *description = "random init";
  }
  // Before any extraction (the raw-pixel row came first, and then the backbone's failed).
  BAM_CHECK(c.img_size >= v.patch_size,
            "--img_size {}: smaller than the backbone's patches of {} pixels, of which it would see none", c.img_size,
            v.patch_size);
  // (The patch grid would leave the last rows and columns out, unseen.)
  BAM_CHECK(c.img_size % v.patch_size == 0,
            "--img_size {} is not a multiple of the backbone's patch size {}: its last {} pixel rows and columns "
            "would be left out; give {} or {}",
            c.img_size, v.patch_size, c.img_size % v.patch_size, c.img_size - c.img_size % v.patch_size,
            c.img_size - c.img_size % v.patch_size + v.patch_size);
  bam::Generator gen(static_cast<uint64_t>(c.seed));
  auto vit = std::make_unique<bam::VisionTransformer>(v, &gen);
  if (!weights.empty()) {
    try {
      vit->load_state(weights, true);
    } catch (const bam::Error& e) {
      bam::fail("--pretrained_weights {}: {}", c.pretrained_weights, e.what());
    }
  }
  vit->train(false);
  return vit;
}

// How this process takes part: alone (group null), or as one rank of a data-parallel run. The
// steps that differ between the two ask it, rather than each testing for a group.
struct Ranks {
  bam::Communicator* group = nullptr;
  int on_this_machine = 1;  // ranks on this process's machine, it included
  int probe_threads = 0;  // rank 0's CPU threads while it trains the probe alone (0: its own)
  int rank() const { return group ? group->rank() : 0; }
  int world_size() const { return group ? group->world_size() : 1; }
  // This rank's share of `images`: all of them alone, else its part, kept in *part.
  const bam::data::Dataset& share_of(const bam::data::Dataset& images, bam::data::Dataset* part) const {
    if (!group) return images;
    *part = bam::data::contiguous_part(images, rank(), world_size());
    return *part;
  }
  // Whether `value` holds on every rank (collective).
  bool true_on_every_rank(bool value) const { return group ? bam::true_on_every_rank(*group, value) : value; }
  // Every rank stops when one has a problem (collective): its own, or `elsewhere`'s words.
  void fail_if_any(const std::string& problem, const std::string& elsewhere) const {
    if (group)
      bam::fail_if_any_rank(*group, problem, elsewhere);
    else if (!problem.empty())
      bam::fail("{}", problem);
  }
  // The kNN vote and the linear probe over the shares of the training and validation rows.
  bam::KnnResult knn_classify(const bam::Tensor& train, const bam::Tensor& train_labels, const bam::Tensor& val,
                              const bam::Tensor& val_labels, int64_t classes, int64_t k, double temperature) const {
    return group ? bam::knn_classify_across_ranks(train, train_labels, val, val_labels, classes, *group, k, temperature)
                 : bam::knn_classify(train, train_labels, val, val_labels, classes, k, temperature);
  }
  bam::KnnResult train_linear_probe(bam::FeatureSet train, bam::FeatureSet val, const bam::LinearProbeOptions& options,
                                    const std::function<bam::FeatureSet(int64_t)>& augmented,
                                    bam::LinearProbeBest* best) const {
    return group ? bam::train_linear_probe_across_ranks(std::move(train), std::move(val), options, *group, augmented,
                                                        best)
                 : bam::train_linear_probe(std::move(train), val, options, augmented, best);
  }
};

// The row of one set of features. `device` is where the backbone runs: the kNN vote and the linear
// probe run there too when their features fit (bam/evaluation_device.h). With ranks, each extracts
// the features of its slice of both folders; the kNN neighbours are merged and rank 0 trains the
// linear probe on the gathered features, with the global batch: every rank gets one process's row.
Row evaluate(const std::string& name, const bam::VisionTransformer* backbone, const bam::data::Dataset& train,
             const bam::data::Dataset& val, const ProbeConfig& c, bam::Device device, const Ranks& ranks) {
  Row row{name};
  bam::FeatureOptions f;
  f.img_size = c.img_size;
  f.batch_size = std::max<int64_t>(c.batch_size_per_gpu, 64);
  f.threads = static_cast<int>(c.num_workers);
  f.backend = c.data_backend == "gpu" ? bam::data::DataBackend::gpu : bam::data::DataBackend::cpu;
  f.recipe.eval_resize_ratio = c.eval_resize_ratio;
  f.seed = static_cast<uint64_t>(c.seed);
  bam::data::Dataset train_slice, val_slice;  // with ranks
  const bam::data::Dataset& train_part = ranks.share_of(train, &train_slice);
  const bam::data::Dataset& val_part = ranks.share_of(val, &val_slice);
  // One pass over the folders serves both: the kNN's features (the final block's CLS token) are
  // the linear probe's last block (every block's output goes through the final norm, as DINO's
  // get_intermediate_layers does), and raw pixels are the same for both.
  const bool knn = c.mode != "linear", linear = c.mode != "knn";
  if (linear) {
    f.n_last_blocks = backbone ? c.n_last_blocks : 1;
    f.avgpool_patchtokens = backbone && c.avgpool_patchtokens;
  }
  // The linear probe's augmented epochs (--linear_aug) start with epoch 0's views; without the
  // kNN, they are the only training features needed.
  auto augmented_epoch = [&, f](int64_t epoch) {
    bam::FeatureOptions a = f;
    a.augment = true;
    a.epoch = epoch;
    return bam::extract_features(backbone, train_part, a);
  };
  std::printf("[%s] extracting features...\n", name.c_str());
  std::fflush(stdout);
  bam::FeatureSet tr =
      linear && c.linear_aug && !knn ? augmented_epoch(0) : bam::extract_features(backbone, train_part, f);
  bam::FeatureSet va = bam::extract_features(backbone, val_part, f);
  if (knn) {
    const int64_t k = std::min(c.nb_knn, train.size());  // the neighbours there are (knn_classify caps it too)
    const int64_t width = backbone ? backbone->config().embed_dim : tr.features.size(1);
    const int64_t first = backbone ? (f.n_last_blocks - 1) * width : 0;
    const bam::EvaluationDevice on =
        bam::evaluation_device(device, bam::knn_device_bytes(tr.features.size(0), val.size(), width, k));
    const bam::Tensor train_knn = tr.features.narrow(1, first, width).contiguous().to(on.device);
    const bam::Tensor val_knn = va.features.narrow(1, first, width).contiguous();
    row.knn = ranks.knn_classify(train_knn, tr.labels, val_knn, va.labels, tr.num_classes, k, c.temperature);
    const std::string k_text =
        k < c.nb_knn ? fmt::format("{}, every training image (--nb_knn {})", k, c.nb_knn) : std::to_string(k);
    std::printf("[%s] kNN (k=%s, T=%g%s%s): top-1 %.2f%%  top-5 %.2f%%\n", name.c_str(), k_text.c_str(), c.temperature,
                on.note.empty() ? "" : ", on ", on.note.c_str(), row.knn.top1, row.knn.top5);
  }
  if (linear) {
    bam::LinearProbeOptions lo;
    lo.epochs = c.epochs;
    lo.lr = c.lr;
    lo.batch_size = c.batch_size_per_gpu * ranks.world_size();  // the global batch, as DINO's eval_linear
    lo.bn_head = c.bn_head;
    lo.seed = static_cast<uint64_t>(c.seed);
    // Rank 0's steps may take its waiting peers' cores; not while they make augmented epochs.
    lo.threads = ranks.rank() == 0 && !c.linear_aug ? ranks.probe_threads : 0;
    const bam::EvaluationDevice on = bam::evaluation_device(
        device,
        bam::linear_probe_device_bytes(train.size(), val.size(), tr.features.size(1), tr.num_classes, lo.batch_size));
    lo.device = on.device;
    if (!on.note.empty()) std::printf("[%s] linear probe on %s\n", name.c_str(), on.note.c_str());
    if (ranks.group)
      std::printf("[%s] rank 0 trains the linear probe on the %d ranks' features, with the global batch of %lld\n",
                  name.c_str(), ranks.world_size(), static_cast<long long>(lo.batch_size));
    std::function<bam::FeatureSet(int64_t)> augmented;
    if (c.linear_aug) {
      augmented = augmented_epoch;
      if (knn) {  // the kNN's evaluation view is done with: the probe starts from epoch 0's views
        tr = bam::FeatureSet();
        tr = augmented_epoch(0);
      }
    }
    lo.val_freq = c.val_freq;
    row.linear = ranks.train_linear_probe(std::move(tr), std::move(va), lo, augmented, &row.linear_best);
    std::printf("[%s] linear (%lld epochs): top-1 %.2f%%  top-5 %.2f%%\n", name.c_str(),
                static_cast<long long>(c.epochs), row.linear.top1, row.linear.top5);
    if (row.linear_best.validations > 1)
      std::printf(
          "[%s] linear, best of %lld validations (--val_freq %lld; the figure DINO's eval_linear reports): top-1 "
          "%.2f%% after epoch %lld\n",
          name.c_str(), static_cast<long long>(row.linear_best.validations), static_cast<long long>(c.val_freq),
          row.linear_best.result.top1, static_cast<long long>(row.linear_best.epoch));
  }
  std::fflush(stdout);
  return row;
}

// The flags every rank must share, by name: all but --device and --data_backend, each rank's own
// (and --nproc_per_node, which started them).
std::vector<std::pair<std::string, std::string>> flags_for_ranks(const ProbeConfig& c) {
  nlohmann::ordered_json j = {{"pretrained_weights", c.pretrained_weights},
                              {"checkpoint_key", c.checkpoint_key},
                              {"arch", c.arch},
                              {"patch_size", c.patch_size},
                              {"embed_dim", c.embed_dim},
                              {"depth", c.depth},
                              {"num_heads", c.num_heads},
                              {"n_last_blocks", c.n_last_blocks},
                              {"avgpool_patchtokens", c.avgpool_patchtokens},
                              {"bn_head", c.bn_head},
                              {"linear_aug", c.linear_aug},
                              {"baselines", c.baselines},
                              {"epochs", c.epochs},
                              {"val_freq", c.val_freq},
                              {"batch_size_per_gpu", c.batch_size_per_gpu},
                              {"nb_knn", c.nb_knn},
                              {"img_size", c.img_size},
                              {"seed", c.seed},
                              {"lr", c.lr},
                              {"temperature", c.temperature},
                              {"eval_resize_ratio", c.eval_resize_ratio},
                              {"data_path", c.data_path},
                              {"mode", c.mode},
                              {"output_dir", c.output_dir},
                              {"num_workers", c.num_workers}};
  std::vector<std::pair<std::string, std::string>> flags;
  for (const auto& [key, value] : j.items()) flags.emplace_back("--" + key, value.dump());
  return flags;
}

std::string cell(double v) { return v < 0 ? "-" : fmt::format("{:.2f}", v); }

// Floats per image of the features a row extracts (train and val together; one pass serves the
// kNN and the linear probe): the crop's pixels for raw pixels; for a backbone, its CLS token
// (--mode knn) or the last n blocks' CLS tokens and the pooled patch tokens.
int64_t feature_floats(const bam::VisionTransformer* backbone, const ProbeConfig& c) {
  if (!backbone) return 3 * c.img_size * c.img_size;
  const int64_t width = backbone->config().embed_dim;
  const int64_t knn = width, linear = width * (c.n_last_blocks + (c.avgpool_patchtokens ? 1 : 0));
  return c.mode == "knn" ? knn : c.mode == "linear" ? linear : std::max(knn, linear);
}

// The host memory a row's features take at their peak on this machine, for `world` ranks of which
// `local` run here (1 and 1: one process), checked before any work. Every row keeps its train and
// val features (f32), twice at the peak: the batches' features while they are joined, then the
// kNN's slice of them and its normalised copy (at most as wide as the features together). Ranks
// hold a slice each (counted as if all were here, as rank 0's machine holds them all below), and:
//  - for the linear probe, rank 0 gathers the whole sets, padded and then joined: 3 times;
//  - for the kNN, every rank also gathers the whole val set's kNN features (`knn_width` floats an
//    image) and normalises them, and gathers every rank's k nearest candidates for each val image
//    (two f64 each): `local` copies here. The kNN's memory is freed before the linear probe starts.
struct FeatureMemory {
  int64_t bytes = 0;
  std::string held;    // "twice at the peak", ...: for the message
  std::string remedy;  // what needs less
};
FeatureMemory feature_memory(int64_t images, int64_t val_images, int64_t floats, int64_t knn_width,
                             const ProbeConfig& c, int world, int local) {
  const int64_t f32 = sizeof(float), features = images * floats * f32;
  const char* smaller = c.mode == "knn" ? "" : "a smaller --n_last_blocks or --mode knn needs less";
  if (world == 1) return {2 * features, "twice at the peak", smaller};
  const bool knn = c.mode != "linear", linear = c.mode != "knn";
  const int64_t k = std::min<int64_t>(c.nb_knn, images - val_images);
  const int64_t knn_extra =
      knn ? local * (2 * val_images * knn_width * f32 + (world + 1) * val_images * k * 2 * int64_t{sizeof(double)}) : 0;
  const int64_t knn_peak = 2 * features + knn_extra, linear_peak = linear ? 3 * features : 0;
  if (linear_peak >= knn_peak) return {linear_peak, "3 times at the peak, gathered on rank 0", smaller};
  return {knn_peak,
          fmt::format("twice at the peak, and this machine's {} ranks' {} of kNN val features and candidates", local,
                      bam::tool::memory_text(knn_extra)),
          "fewer ranks need less"};
}

}  // namespace

int main(int argc, char** argv) {
  bam::tune_host_allocator();
  CLI::App app{"bamprobe: linear and kNN evaluation of a frozen ViT backbone"};
  ProbeConfig c;
  app.add_option("--pretrained_weights", c.pretrained_weights,
                 "bamtrain checkpoint or exported backbone (.safetensors); none evaluates a random init");
  app.add_option("--checkpoint_key", c.checkpoint_key, "student | teacher (bamtrain checkpoints)")
      ->default_val(c.checkpoint_key)
      ->check(CLI::IsMember({"student", "teacher"}));
  app.add_option("--arch", c.arch, "vit_tiny | vit_small | vit_base | custom (taken from a checkpoint when given)")
      ->default_val(c.arch);
  app.add_option("--patch_size", c.patch_size, "patch size")
      ->default_val(c.patch_size)
      ->check(bam::tool::positive_number);
  app.add_option("--embed_dim", c.embed_dim, "custom width")->check(bam::tool::positive_number);
  app.add_option("--depth", c.depth, "custom depth")->check(bam::tool::positive_number);
  app.add_option("--num_heads", c.num_heads, "custom heads")->check(bam::tool::positive_number);
  app.add_option("--n_last_blocks", c.n_last_blocks, "linear: CLS tokens of the last n blocks")
      ->default_val(c.n_last_blocks)
      ->check(bam::tool::positive_number);
  app.add_option("--avgpool_patchtokens", c.avgpool_patchtokens, "linear: also average-pooled patch tokens")
      ->type_name("BOOL")
      ->default_val("false");
  app.add_option("--bn_head", c.bn_head, "linear: BatchNorm (no affine) before the Linear layer")
      ->type_name("BOOL")
      ->default_val("false");
  app.add_option("--linear_aug", c.linear_aug,
                 "linear: train on RandomResizedCrop + flip views (features recomputed every epoch); false trains on "
                 "the evaluation view's features, computed once")
      ->type_name("BOOL")
      ->default_val("false");
  app.add_option("--epochs", c.epochs, "linear probe epochs")->default_val(c.epochs)->check(bam::tool::positive_number);
  app.add_option("--val_freq", c.val_freq,
                 "linear: validate every N epochs (and after the last), reporting the best beside the last "
                 "epoch's, as DINO's eval_linear; 0: after the last only")
      ->default_val(c.val_freq)
      ->check(bam::tool::non_negative_number);
  app.add_option("--lr", c.lr, "linear probe learning rate for a batch of 256")
      ->default_val(c.lr)
      ->check(bam::tool::positive_number);
  app.add_option("--batch_size_per_gpu", c.batch_size_per_gpu, "linear probe batch")
      ->default_val(c.batch_size_per_gpu)
      ->check(bam::tool::positive_number);
  app.add_option("--data_path", c.data_path, "folder with train/ and val/ ImageFolders")->required();
  app.add_option("--output_dir", c.output_dir, "probe.json is written here")->default_val(c.output_dir);
  app.add_option("--nb_knn", c.nb_knn, "k of the kNN classifier")
      ->default_val(c.nb_knn)
      ->check(bam::tool::positive_number);
  app.add_option("--temperature", c.temperature, "kNN vote temperature")
      ->default_val(c.temperature)
      ->check(bam::tool::positive_number);
  app.add_option("--mode", c.mode, "linear | knn | both")
      ->default_val(c.mode)
      ->check(CLI::IsMember({"linear", "knn", "both"}));
  app.add_option("--img_size", c.img_size, "evaluation crop side")
      ->default_val(c.img_size)
      ->check(bam::tool::positive_number);
  app.add_option("--eval_resize_ratio", c.eval_resize_ratio, "shorter side to img_size x ratio before the centre crop")
      ->default_val(c.eval_resize_ratio)
      ->check(bam::tool::finite_range(1.0, 4.0));
  app.add_option("--baselines", c.baselines, "also evaluate raw pixels and a random-init backbone")
      ->type_name("BOOL")
      ->default_val("true");
  app.add_option("--num_workers", c.num_workers, "decoding threads")
      ->default_val(c.num_workers)
      ->check(bam::tool::finite_range(1, 1024));
  app.add_option("--data_backend", c.data_backend,
                 "cpu | gpu | auto: where images are decoded and cropped (auto: gpu with a CUDA device)")
      ->default_val(c.data_backend)
      ->check(CLI::IsMember({"cpu", "gpu", "auto"}));
  app.add_option("--seed", c.seed, "seed (random init, probe)")->default_val(c.seed);
  app.add_option("--device", c.device,
                 "cpu | cuda | cuda:N | auto (cuda when a GPU answers): where the backbone computes features")
      ->default_val(c.device);
  bam::tool::OfficialOnlyFlags official_only;
  add_official_only_flags(app, official_only, bam::tool::OfficialScript::linear);
  std::string nproc_text = "1";
  app.add_option("--nproc_per_node", nproc_text,
                 "start this many ranks of this command on this machine, as torchrun does (each extracts the "
                 "features of its share of the images, on a GPU of its own or the cores): a count, gpu, cpu or auto")
      ->default_val(nproc_text);
  bam::tool::require_plain_numbers(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  c.patch_size_given = app.count("--patch_size") > 0;
  c.arch_given = app.count("--arch") > 0;
  std::string tool_name = "bamprobe";
  std::shared_ptr<bam::Communicator> group;
  std::vector<std::string> created_output_dir;  // by this run, removed again while still empty if it fails
  try {
    namespace fs = std::filesystem;
    bam::tool::check_environment_variables();
    // Data parallelism: --nproc_per_node, or torchrun's RANK/WORLD_SIZE/LOCAL_RANK (or
    // --local-rank); the other ranks print nothing but their errors.
    const bam::tool::RankLaunch launched = bam::tool::read_rank_launch(
        "bamprobe", nproc_text, bam::tool::resolve_device(c.device),
        app.get_option("--local-rank")->count() > 0 ? std::optional<int64_t>(official_only.local_rank) : std::nullopt);
    const bam::LaunchEnvironment& launch = launched.launch;
    tool_name = launched.tool_name;
    if (!launched.launcher) check_official_only_flags(app, official_only);  // the ranks say it
    const std::string asked_device = c.device;
    c.device = bam::tool::rank_device(launch, bam::tool::resolve_device(c.device));
    c.data_backend = bam::tool::resolve_data_backend(c.data_backend, c.device);
    if (launched.launcher) return bam::tool::run_local_ranks(launched.nproc_per_node, argv);
    if (const std::string note = bam::tool::cpu_fallback_note(asked_device, c.device); !note.empty())
      std::printf("%s\n", note.c_str());
    std::printf("device: %s\ndata_backend: %s\n", c.device.c_str(), c.data_backend.c_str());
    if (launch.rank == 0) {
      created_output_dir = bam::prepare_output_dir(c.output_dir);
      for (const std::string& name : bam::remove_abandoned_temporary_files(
               c.output_dir, [](const std::string& name) { return name == "probe.json"; }))
        std::printf("Removed %s/%s, a file an interrupted bamprobe left half-written\n", c.output_dir.c_str(),
                    name.c_str());
    }
    const bam::Device device = bam::tool::open_device(c.device);
    BAM_CHECK(c.data_backend == "cpu" || device.is_cuda(),
              "--data_backend gpu needs --device cuda (the crops are made on the GPU), got --device {}", c.device);
    Ranks ranks;
    if (launch.distributed()) {
      // Not the process group (bam::set_process_group): nothing here trains across the ranks.
      group = bam::tool::join_rank_group(launch, c.device);
      ranks.group = group.get();
      ranks.on_this_machine = bam::ranks_on_this_machine(*group);
      const int threads = bam::tool::share_cores_among_local_ranks(*group);
      // Rank 0 trains the linear probe while the others wait: then the cores are all its own
      // (without augmented epochs: the others extract the next one meanwhile).
      if (bam::cpu::num_threads_requested() == 0) ranks.probe_threads = bam::cpu::available_cores();
      std::printf(
          "Data parallel: %s; each rank extracts the features of its share of the images, with %d CPU "
          "thread%s\n",
          group->describe().c_str(), threads, threads == 1 ? "" : "s");
    }
    // The backbone first: its file and architecture are checked before the folders are listed
    // (which takes a while for a large dataset).
    std::string description;
    auto backbone = load_backbone(c, &description);
    bam::data::Dataset train, val;
    try {
      train = bam::data::open_image_folder((fs::path(c.data_path) / "train").string());
      val = bam::data::open_image_folder((fs::path(c.data_path) / "val").string());
    } catch (const bam::data::ImageDecodeError& e) {
      bam::fail("--data_path {}: {} (expected train/ and val/ ImageFolders inside)", c.data_path, e.what());
    }
    if (const std::string mismatch = bam::data::class_mismatch(train, val); !mismatch.empty())
      bam::fail("--data_path {}: train/ and val/ must have the same class folders: {}", c.data_path, mismatch);
    if (c.mode != "knn") {  // what the linear probe needs, before any extraction
      BAM_CHECK(train.num_classes() >= 2,
                "--data_path {}: the linear probe needs at least two classes, train/ has {} (--mode knn runs the "
                "kNN alone)",
                c.data_path, train.num_classes());
      const int64_t batch = c.batch_size_per_gpu * ranks.world_size();
      BAM_CHECK(!c.bn_head || (batch >= 2 && train.size() >= 2),
                "--bn_head true normalises each batch by its variance, which needs batches of at least 2 rows: "
                "--batch_size_per_gpu {} on {} rank{} makes batches of {}, and --data_path {} has {} training "
                "image{}",
                c.batch_size_per_gpu, ranks.world_size(), ranks.world_size() == 1 ? "" : "s", batch, c.data_path,
                train.size(), train.size() == 1 ? "" : "s");
    }
    BAM_CHECK(official_only.num_labels == 0 || official_only.num_labels == train.num_classes(),
              "--num_labels {}: --data_path {} has {} classes (the probe takes its labels from the class folders)",
              official_only.num_labels, c.data_path, train.num_classes());
    if (ranks.group) {
      // Ranks that differ in a flag or in what they read would call the collectives differently.
      std::vector<std::pair<std::string, std::string>> items = flags_for_ranks(c);
      items.emplace_back("the --data_path files", bam::data::dataset_listing(train) + bam::data::dataset_listing(val));
      items.emplace_back("the backbone", description);
      // And the same weights: the same path can hold another file on another machine.
      items.emplace_back("the weights", fmt::format("{:.17g}", bam::weight_checksum(backbone->parameters())));
      bam::check_ranks_agree(*ranks.group, items, "flags, folders or weights",
                             "every rank needs the same flags but for --device and --data_backend, the same "
                             "--data_path files and the same --pretrained_weights contents");
    }
    BAM_CHECK(c.mode == "knn" || (c.n_last_blocks >= 1 && c.n_last_blocks <= backbone->config().depth),
              "--n_last_blocks {}: the backbone has {} blocks (1 takes the final CLS token alone)", c.n_last_blocks,
              backbone->config().depth);
    backbone->to(device);
    std::printf("bamprobe: %lld train / %lld val images, %lld classes; backbone %s; %d CPU thread%s\n",
                static_cast<long long>(train.size()), static_cast<long long>(val.size()),
                static_cast<long long>(train.num_classes()), description.c_str(), bam::cpu::num_threads(),
                bam::cpu::num_threads() == 1 ? "" : "s");
    const int64_t images = train.size() + val.size(), available = bam::tool::available_memory_bytes();
    const FeatureMemory backbone_memory =
        feature_memory(images, val.size(), feature_floats(backbone.get(), c), backbone->config().embed_dim, c,
                       ranks.world_size(), ranks.on_this_machine);
    // Each rank counts its own machine's memory; all of them stop together, the short one saying why.
    std::string memory_problem;
    if (!bam::tool::fits_in_memory(backbone_memory.bytes, available))
      memory_problem = fmt::format(
          "the backbone's features of {} images ({} floats each, f32, held {}) take {}, more than 80 % of the {} of "
          "memory available{}{}",
          images, feature_floats(backbone.get(), c), backbone_memory.held,
          bam::tool::memory_text(backbone_memory.bytes), bam::tool::memory_text(available),
          backbone_memory.remedy.empty() ? "" : "; ", backbone_memory.remedy);
    ranks.fail_if_any(memory_problem,
                      "another rank's machine has too little memory for the backbone's features (see its error)");
    std::vector<Row> rows;
    if (c.baselines) {
      const FeatureMemory raw_memory =
          feature_memory(images, val.size(), feature_floats(nullptr, c), feature_floats(nullptr, c), c,
                         ranks.world_size(), ranks.on_this_machine);
      // Every rank must agree: the rows are collective.
      const bool raw_fits = bam::tool::fits_in_memory(raw_memory.bytes, available);
      if (ranks.true_on_every_rank(raw_fits)) {
        rows.push_back(evaluate("raw pixels", nullptr, train, val, c, device, ranks));
      } else {
        std::printf(
            "[raw pixels] not evaluated: the pixels of %lld images (3 x %lld x %lld floats each, held %s) "
            "take %s, more than 80 %% of the %s of memory available (a smaller --img_size fits them; "
            "--baselines false leaves the baselines out)\n",
            static_cast<long long>(images), static_cast<long long>(c.img_size), static_cast<long long>(c.img_size),
            raw_memory.held.c_str(), bam::tool::memory_text(raw_memory.bytes).c_str(),
            bam::tool::memory_text(available).c_str());
        rows.push_back(Row{"raw pixels (not evaluated: memory)"});
      }
      if (!c.pretrained_weights.empty()) {
        // The same architecture as the pretrained backbone, freshly initialised.
        bam::Generator gen(static_cast<uint64_t>(c.seed));
        auto random_backbone = std::make_unique<bam::VisionTransformer>(backbone->config(), &gen);
        random_backbone->train(false);
        random_backbone->to(device);
        rows.push_back(evaluate("random-init backbone", random_backbone.get(), train, val, c, device, ranks));
      }
    }
    rows.push_back(evaluate(c.pretrained_weights.empty() ? "random-init backbone" : "backbone", backbone.get(), train,
                            val, c, device, ranks));
    std::printf("\n| features | kNN top-1 | kNN top-5 | linear top-1 | linear top-5 |\n|---|---|---|---|---|\n");
    nlohmann::ordered_json results;
    for (const Row& r : rows) {
      std::printf("| %s | %s | %s | %s | %s |\n", r.name.c_str(), cell(r.knn.top1).c_str(), cell(r.knn.top5).c_str(),
                  cell(r.linear.top1).c_str(), cell(r.linear.top5).c_str());
      auto value = [](double v) { return v < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(v); };  // not run
      results[r.name] = {
          {"knn_top1", value(r.knn.top1)},
          {"knn_top5", value(r.knn.top5)},
          {"linear_top1", value(r.linear.top1)},
          {"linear_top5", value(r.linear.top5)},
          {"linear_best_top1", value(r.linear_best.result.top1)},
          {"linear_best_top5", value(r.linear_best.result.top5)},
          {"linear_best_epoch",
           r.linear_best.validations > 0 ? nlohmann::ordered_json(r.linear_best.epoch) : nlohmann::ordered_json()}};
    }
    results["weights"] = description;  // beside the rows, not over the "backbone" row
    if (ranks.rank() == 0) {           // the others have the same rows
      const std::string json_path = (fs::path(c.output_dir) / "probe.json").string();
      try {
        bam::write_file_atomically(json_path, results.dump(2) + "\n");
      } catch (const bam::Error& e) {
        bam::fail("{} (the table above has the results)", e.what());
      }
    }
    if (group) group->finish();        // every rank done before any exits
  } catch (const std::exception& e) {  // bam::Error, and anything else a library throws
    std::fprintf(stderr, "%s: %s\n", tool_name.c_str(), e.what());
    group.reset();  // before CUDA goes: NCCL aborts, the other ranks see us stop
    bam::remove_unused_output_dir(created_output_dir);  // a refused run leaves no empty folder
    return 1;
  }
  return 0;
}
