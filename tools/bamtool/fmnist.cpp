// `bamtool fmnist`: writes the Fashion-MNIST data of the Debian package dataset-fashion-mnist as an
// ImageFolder of JPEG files: OUT/train/<class>/NNNNN.jpg (60,000) and OUT/val/<class>/NNNNN.jpg
// (10,000). Class folders are prefixed with the label so that sorted names keep the dataset's
// label order (0-t-shirt_top, 1-trouser, ...).
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bam/output_dir.h"
#include "engine/error.h"
#include "tools/bamtool/commands.h"
#include "tools/common/flag_checks.h"
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

struct Split {
  std::string name, prefix;
  std::vector<uint8_t> images, labels;
  int n = 0, rows = 0, cols = 0;
};

// Reads and checks a split's two IDX files.
Split read_split(const std::string& source, const char* name) {
  Split s;
  s.name = name;
  s.prefix = source + (s.name == "train" ? "/train" : "/t10k");
  std::vector<int> image_dims, label_dims;
  s.images = read_idx(s.prefix + "-images-idx3-ubyte.gz", 2051, &image_dims);
  s.labels = read_idx(s.prefix + "-labels-idx1-ubyte.gz", 2049, &label_dims);
  BAM_CHECK(image_dims[0] == label_dims[0], "{}: {} images but {} labels", s.prefix, image_dims[0], label_dims[0]);
  s.n = image_dims[0];
  s.rows = image_dims[1];
  s.cols = image_dims[2];
  BAM_CHECK(s.rows > 0 && s.cols > 0, "{}-images-idx3-ubyte.gz: images of {}x{} pixels", s.prefix, s.cols, s.rows);
  for (int i = 0; i < s.n; ++i)
    BAM_CHECK(s.labels[i] < 10, "{}-labels-idx1-ubyte.gz: label {} of image {} is not a class 0-9", s.prefix,
              s.labels[i], i);
  return s;
}

int run_fmnist(const FmnistOptions& o) {
  namespace fs = std::filesystem;
  prepare_output_dir(o.out, "--out");
  // Into fresh folders only: images of an earlier conversion would stay beside the new ones.
  for (const char* split : {"train", "val"})
    BAM_CHECK(!fs::exists(fs::path(o.out) / split), "--out {}: already holds {}/ (remove it, or pick another folder)",
              o.out, split);
  // Both splits are read and checked before anything is written (a missing t10k file stopped the
  // conversion after 60,000 train images, which then barred the rerun).
  std::vector<Split> splits;
  for (const char* name : {"train", "val"}) splits.push_back(read_split(o.source, name));
  for (const Split& split : splits) {
    // Written under <split>.partial and renamed when whole: an interrupted conversion leaves no
    // train/ or val/ that looks complete. (A .partial folder an interrupted run left is this
    // tool's own, and is started over.)
    const fs::path done = fs::path(o.out) / split.name, partial = fs::path(o.out) / (split.name + ".partial");
    fs::remove_all(partial);
    const int count = o.limit > 0 ? static_cast<int>(std::min<int64_t>(o.limit, split.n)) : split.n;
    for (const char* name : kClassNames) fs::create_directories(partial / name);
    for (int i = 0; i < count; ++i) {
      const std::string path = (partial / kClassNames[split.labels[i]] / fmt::format("{:05}.jpg", i)).string();
      write_jpeg_file(path, split.cols, split.rows, 1,
                      split.images.data() + static_cast<size_t>(i) * split.rows * split.cols, o.quality);
    }
    std::error_code ec;
    fs::rename(partial, done, ec);
    BAM_CHECK(!ec, "--out {}: cannot rename {} to {}: {}", o.out, partial.string(), done.string(), ec.message());
    std::printf("wrote %d %s images to %s\n", count, split.name.c_str(), done.string().c_str());
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
      ->check(non_negative_number);
  return [o] { return run_fmnist(*o); };
}

}  // namespace bam::tool
