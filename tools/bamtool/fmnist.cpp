// `bamtool fmnist`: writes the Fashion-MNIST data of the Debian package dataset-fashion-mnist as an
// ImageFolder of JPEG files: OUT/train/<class>/NNNNN.jpg (60,000) and OUT/val/<class>/NNNNN.jpg
// (10,000). Class folders are prefixed with the label so that sorted names keep the dataset's
// label order (0-t-shirt_top, 1-trouser, ...).
#include <zlib.h>

#include <cstdio>
#include <filesystem>

#include "bam/output_dir.h"
#include "engine/error.h"
#include "tools/bamtool/commands.h"
#include "tools/common/image_files.h"

namespace bam::tool {
namespace {

const char* kClassNames[10] = {"0-t-shirt_top", "1-trouser", "2-pullover", "3-dress", "4-coat",
                               "5-sandal",      "6-shirt",   "7-sneaker",  "8-bag",   "9-ankle_boot"};

// Reads a gzip'ed IDX file: magic 2051 (images: n x rows x cols u8) or 2049 (labels: n u8).
std::vector<uint8_t> read_idx(const std::string& path, int expected_magic, std::vector<int>* dims) {
  gzFile f = gzopen(path.c_str(), "rb");
  BAM_CHECK(f, "{}: cannot open (install the Debian package dataset-fashion-mnist)", path);
  auto read_u32 = [&]() {
    unsigned char b[4];
    BAM_CHECK(gzread(f, b, 4) == 4, "{}: truncated IDX header", path);
    return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
  };
  uint32_t magic = read_u32();
  BAM_CHECK(static_cast<int>(magic) == expected_magic, "{}: IDX magic {} (expected {})", path, magic, expected_magic);
  int ndims = expected_magic == 2051 ? 3 : 1;
  size_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    dims->push_back(static_cast<int>(read_u32()));
    total *= static_cast<size_t>(dims->back());
  }
  BAM_CHECK(total < (size_t(1) << 31), "{}: implausible IDX size", path);
  std::vector<uint8_t> data(total);
  BAM_CHECK(gzread(f, data.data(), static_cast<unsigned>(total)) == static_cast<int>(total), "{}: truncated IDX data",
            path);
  gzclose(f);
  return data;
}

struct FmnistOptions {
  std::string out;
  std::string source = "/usr/share/datasets/fashion-mnist";
  int quality = 95;
  int64_t limit = 0;  // per split; 0 writes everything
};

int run_fmnist(const FmnistOptions& o) {
  namespace fs = std::filesystem;
  prepare_output_dir(o.out, "--out");
  // Into fresh folders only: images of an earlier conversion would stay beside the new ones.
  for (const char* split : {"train", "val"})
    BAM_CHECK(!fs::exists(fs::path(o.out) / split), "--out {}: already holds {}/ (remove it, or pick another folder)",
              o.out, split);
  for (const char* split : {"train", "val"}) {
    std::string prefix = std::string(o.source) + (std::string(split) == "train" ? "/train" : "/t10k");
    std::vector<int> image_dims, label_dims;
    std::vector<uint8_t> images = read_idx(prefix + "-images-idx3-ubyte.gz", 2051, &image_dims);
    std::vector<uint8_t> labels = read_idx(prefix + "-labels-idx1-ubyte.gz", 2049, &label_dims);
    BAM_CHECK(image_dims[0] == label_dims[0], "{}: {} images but {} labels", prefix, image_dims[0], label_dims[0]);
    const int n = image_dims[0], rows = image_dims[1], cols = image_dims[2];
    const int count = o.limit > 0 ? static_cast<int>(std::min<int64_t>(o.limit, n)) : n;
    for (const char* name : kClassNames) fs::create_directories(fs::path(o.out) / split / name);
    for (int i = 0; i < count; ++i) {
      BAM_CHECK(labels[i] < 10, "{}: label {} out of range", prefix, labels[i]);
      std::string path = (fs::path(o.out) / split / kClassNames[labels[i]] / fmt::format("{:05}.jpg", i)).string();
      write_jpeg_file(path, cols, rows, 1, images.data() + static_cast<size_t>(i) * rows * cols, o.quality);
    }
    std::printf("wrote %d %s images to %s\n", count, split, (fs::path(o.out) / split).string().c_str());
  }
  return 0;
}

}  // namespace

Action add_fmnist(CLI::App& app) {
  auto o = std::make_shared<FmnistOptions>();
  CLI::App* sub = app.add_subcommand("fmnist", "Write Fashion-MNIST as an ImageFolder of JPEGs (train/ and val/)");
  sub->add_option("--out", o->out, "output folder")->required();
  sub->add_option("--source", o->source, "folder with the *-idx*-ubyte.gz files")->default_val(o->source);
  sub->add_option("--quality", o->quality, "JPEG quality")->default_val(o->quality)->check(CLI::Range(1, 100));
  sub->add_option("--limit", o->limit, "write only the first N images of each split (0: all)")
      ->default_val(o->limit)
      ->check(CLI::NonNegativeNumber);
  return [o] { return run_fmnist(*o); };
}

}  // namespace bam::tool
