// small_train_config (train_test_support.h).
#include "tests/train_test_support.h"

namespace bam::test {

TrainConfig small_train_config(const std::string& output_dir) {
  TrainConfig c;
  c.arch = "custom";
  c.embed_dim = 32;
  c.depth = 2;
  c.num_heads = 2;
  c.patch_size = 4;
  c.global_crops_size = 16;
  c.local_crops_number = 2;
  c.local_crops_size = 8;
  c.hidden_dim = 64;
  c.out_dim = 64;
  c.batch_size_per_gpu = 16;
  c.epochs = 3;
  c.warmup_epochs = 1;
  c.lr = 0.002;
  c.data_path = "synthetic:64";
  c.output_dir = output_dir;
  c.log_freq = 1000;
  c.saveckp_freq = 0;
  c.drop_path_rate = 0.1;  // exercises the per-step RNG in the resume test
  return c;
}

}  // namespace bam::test
