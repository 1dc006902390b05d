// Dataset indexing (directory walks, file lists) and epoch permutations.
#include "data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/image_error.h"
#include "engine/error.h"
#include "engine/philox.h"
#include "engine/whole_number.h"

namespace bam::data {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void dataset_error(const std::string& message) { throw ImageDecodeError(message); }

constexpr int64_t kMaxListLabel = (int64_t{1} << 20) - 1;  // a file list's largest class label

// Prints "indexing PATH: N images" every 10k files, so a big folder does not look like a hang.
struct IndexProgress {
  std::string path;
  int64_t count = 0;
  void tick() {
    if (++count % 10000 == 0) std::fprintf(stderr, "\rindexing %s: %lld images...", path.c_str(), static_cast<long long>(count));
  }
  ~IndexProgress() {
    if (count >= 10000) std::fprintf(stderr, "\rindexing %s: %lld images, done\n", path.c_str(), static_cast<long long>(count));
  }
};

// A file or folder of tools' or systems' metadata (".ipynb_checkpoints", ".git", macOS's "._name.jpg"
// AppleDouble files), never an image or a class.
bool is_hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

std::vector<std::string> sorted_images_in(const fs::path& dir, bool recursive, IndexProgress& progress) {
  std::vector<std::string> out;
  auto add = [&](const fs::directory_entry& e) {
    // (a file whose name starts with '.' is metadata: macOS's AppleDouble "._name.jpg" files)
    if (e.is_regular_file() && !is_hidden(e.path()) && has_image_extension(e.path().string())) {
      out.push_back(e.path().string());
      progress.tick();
    }
  };
  std::error_code ec;
  if (recursive) {
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      add(*it);
  } else {
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) add(*it);
  }
  if (ec) dataset_error(dir.string() + ": cannot list the folder: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

bool has_image_extension(const std::string& path) {
  static const char* extensions[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"};
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* e : extensions)
    if (ext == e) return true;
  return false;
}

Dataset open_image_folder(const std::string& root) {
  Dataset d;
  d.root = root;
  BAM_CHECK(fs::is_directory(root), "{}: no such folder (an ImageFolder has one sub-folder of images per class)",
            root);
  IndexProgress progress{root};
  std::vector<std::string> class_dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && !is_hidden(e.path())) class_dirs.push_back(e.path().filename().string());
  std::sort(class_dirs.begin(), class_dirs.end());
  for (const std::string& name : class_dirs) {
    auto files = sorted_images_in(fs::path(root) / name, true, progress);
    // A folder without images stays a class, so that the labels follow the sorted folder names as
    // torchvision's class_to_idx does (a train/ and a val/ with the same folders agree on every
    // label even when one of them has an empty class); torchvision refuses such a folder.
    if (files.empty())
      std::fprintf(stderr, "warning: %s: no images; class %zu ('%s') stays empty\n",
                   (fs::path(root) / name).string().c_str(), d.classes.size(), name.c_str());
    int64_t label = static_cast<int64_t>(d.classes.size());
    d.classes.push_back(name);
    for (auto& f : files) {
      d.files.push_back(std::move(f));
      d.labels.push_back(label);
    }
  }
  if (d.files.empty()) dataset_error(root + ": no images found in its class subfolders");
  return d;
}

std::string class_mismatch(const Dataset& a, const Dataset& b) {
  if (a.classes == b.classes) return "";
  const size_t common = std::min(a.classes.size(), b.classes.size());
  for (size_t i = 0; i < common; ++i)
    if (a.classes[i] != b.classes[i])
      return fmt::format("class {} is '{}' in {} but '{}' in {}", i, a.classes[i], a.root, b.classes[i], b.root);
  const Dataset& longer = a.classes.size() > b.classes.size() ? a : b;
  const Dataset& shorter = a.classes.size() > b.classes.size() ? b : a;
  return fmt::format("{} has {} classes and {} has {}: '{}' is only in {}", a.root, a.classes.size(), b.root,
                     b.classes.size(), longer.classes[common], longer.root) +
         (shorter.classes.empty() ? fmt::format(" ({} has no class folders)", shorter.root) : "");
}

Dataset open_flat_folder(const std::string& root) {
  Dataset d;
  d.root = root;
  IndexProgress progress{root};
  d.files = sorted_images_in(root, false, progress);
  if (d.files.empty()) dataset_error(root + ": no images found (expected .jpg/.png/... files)");
  d.labels.assign(d.files.size(), -1);
  return d;
}

Dataset open_file_list(const std::string& list_path) {
  std::ifstream in(list_path);
  if (!in.good()) dataset_error(list_path + ": cannot open the file list");
  Dataset d;
  d.root = fs::path(list_path).parent_path().string();
  std::string line;
  int64_t line_number = 0;
  bool any_label = false;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string path;
    fields >> path;
    // A NUL byte: a binary file (an archive, an image) given as a list.
    if (line.find('\0') != std::string::npos)
      dataset_error(list_path + ": not a text file list (line " + std::to_string(line_number) +
                    " holds a NUL byte); --data_path takes a folder of images or a list of image paths");
    int64_t label = -1;
    std::string label_text;
    if (fields >> label_text) {
      // A whole label below 2^20 (classes 0..label are made): "3.7", "12abc" or a file size are not.
      const std::optional<int64_t> n = parse_whole_number(label_text, 0, kMaxListLabel);
      if (!n)
        dataset_error(fmt::format("{}:{}: '{}' is not a class label (a whole number from 0 to {})", list_path,
                                  line_number, label_text, kMaxListLabel));
      label = *n;
      any_label = true;
    }
    fs::path p(path);
    d.files.push_back(p.is_absolute() ? path : (fs::path(d.root) / p).string());
    d.labels.push_back(label);
  }
  if (d.files.empty()) dataset_error(list_path + ": the file list names no images");
  if (any_label) {
    int64_t top = *std::max_element(d.labels.begin(), d.labels.end());
    for (int64_t c = 0; c <= top; ++c) d.classes.push_back(std::to_string(c));
  }
  return d;
}

Dataset open_dataset(const std::string& path) {
  if (!fs::exists(path)) dataset_error(path + ": no such file or folder");
  if (fs::is_regular_file(path)) {
    if (has_image_extension(path))
      dataset_error(path +
                    ": an image, not a dataset: give the folder that holds the images, or a text file "
                    "listing them");
    return open_file_list(path);
  }
  std::string image_in_subfolder, image_at_top;
  int64_t images_at_top = 0;
  for (const auto& e : fs::directory_iterator(path)) {
    if (e.is_regular_file() && !is_hidden(e.path()) && has_image_extension(e.path().string())) {
      if (images_at_top++ == 0) image_at_top = e.path().filename().string();
    } else if (e.is_directory() && !is_hidden(e.path()) && image_in_subfolder.empty()) {
      for (const auto& inner : fs::recursive_directory_iterator(e.path()))
        if (inner.is_regular_file() && !is_hidden(inner.path()) && has_image_extension(inner.path().string())) {
          image_in_subfolder = fs::relative(inner.path(), path).string();
          break;
        }
    }
  }
  // Both would make one of the two layouts drop the other's images without a word.
  if (!image_in_subfolder.empty() && images_at_top > 0)
    dataset_error(fmt::format(
        "{}: holds {} image{} directly (such as {}) and others in sub-folders (such as {}): an ImageFolder has "
        "only class sub-folders, a flat folder only images; move them, or list the images in a file list",
        path, images_at_top, images_at_top == 1 ? "" : "s", image_at_top, image_in_subfolder));
  if (!image_in_subfolder.empty()) return open_image_folder(path);
  return open_flat_folder(path);
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  // Fisher-Yates; draw i is word i of the stream keyed by (seed, epoch, purpose "shuffle").
  PhiloxKey key = philox_key(seed ^ 0x5348554646ull);
  for (int64_t i = n - 1; i > 0; --i) {
    PhiloxBlock b = philox4x32_10({{static_cast<uint32_t>(i / 4), static_cast<uint32_t>(epoch), 0x73687566u, 0}}, key);
    uint64_t bits = b.w[i % 4];
    int64_t j = static_cast<int64_t>((bits * static_cast<uint64_t>(i + 1)) >> 32);
    std::swap(order[i], order[j]);
  }
  return order;
}

Dataset balanced_subset(const Dataset& dataset, double fraction, uint64_t seed, const char* flag) {
  BAM_CHECK(fraction > 0 && fraction <= 1, "{} must be in (0, 1], got {}", flag, fraction);
  if (fraction == 1) return dataset;
  BAM_CHECK(dataset.num_classes() > 0, "{} {}: {} is not labelled (an ImageFolder is needed)", flag, fraction,
            dataset.root);
  std::vector<std::vector<int64_t>> members(dataset.num_classes());
  for (int64_t i = 0; i < dataset.size(); ++i) {
    const int64_t label = dataset.labels[i];
    BAM_CHECK(label >= 0 && label < dataset.num_classes(), "{} {}: {} has label {}, outside its {} classes", flag,
              fraction, dataset.files[i], label, dataset.num_classes());
    members[label].push_back(i);
  }
  std::vector<int64_t> kept;
  for (int64_t c = 0; c < dataset.num_classes(); ++c) {
    const auto& m = members[c];
    if (m.empty()) continue;
    const int64_t size = static_cast<int64_t>(m.size());
    const int64_t take = std::clamp<int64_t>(std::llround(fraction * static_cast<double>(size)), 1, size);
    const std::vector<int64_t> order = epoch_order(size, seed, /*epoch=*/c);  // one stream per class
    for (int64_t k = 0; k < take; ++k) kept.push_back(m[order[k]]);
  }
  std::sort(kept.begin(), kept.end());
  Dataset subset;
  subset.root = dataset.root;
  subset.classes = dataset.classes;
  subset.files.reserve(kept.size());
  subset.labels.reserve(kept.size());
  for (int64_t i : kept) {
    subset.files.push_back(dataset.files[i]);
    subset.labels.push_back(dataset.labels[i]);
  }
  return subset;
}

Dataset contiguous_part(const Dataset& dataset, int64_t part, int64_t parts) {
  BAM_CHECK(parts >= 1 && part >= 0 && part < parts, "contiguous_part: part {} of {} does not exist", part, parts);
  const int64_t n = dataset.size(), first = part * n / parts, last = (part + 1) * n / parts;
  Dataset slice;
  slice.root = dataset.root;
  slice.classes = dataset.classes;
  slice.files.assign(dataset.files.begin() + first, dataset.files.begin() + last);
  slice.labels.assign(dataset.labels.begin() + first, dataset.labels.begin() + last);
  slice.first_index = dataset.first_index + first;
  return slice;
}

std::string dataset_listing(const Dataset& dataset) {
  std::string text = std::to_string(dataset.size()) + " images\n";
  for (size_t i = 0; i < dataset.files.size(); ++i)
    text += std::filesystem::path(dataset.files[i]).lexically_relative(dataset.root).string() + "\t" +
            std::to_string(dataset.labels[i]) + "\n";
  return text;
}

}  // namespace bam::data
