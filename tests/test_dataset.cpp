// Dataset indexing: ImageFolder, flat folder and file-list layouts (and what each refuses, by
// name), the sorted class labels, class_mismatch between two folders, the class-balanced subsets
// of the kNN monitor, and the epoch orders.

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image_error.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace fs = std::filesystem;

TEST_CASE("dataset layouts") {
  std::string root = write_colour_folder("dataset/layouts", 3, 4, 1);
  data::Dataset d = data::open_dataset(root);
  CHECK(d.size() == 12);
  CHECK(d.classes == std::vector<std::string>{"class_0", "class_1", "class_2"});
  CHECK(d.labels[0] == 0);
  CHECK(d.labels[11] == 2);
  CHECK(std::is_sorted(d.files.begin(), d.files.begin() + 4));
  data::Dataset flat = data::open_dataset(root + "/class_1");
  CHECK(flat.size() == 4);
  CHECK(flat.labels[0] == -1);
  std::string list = root + "/list.txt";
  std::ofstream(list) << "# a comment\nclass_0/0.jpg 5\n" << root << "/class_2/1.jpg 1\n";
  data::Dataset listed = data::open_dataset(list);
  REQUIRE(listed.size() == 2);
  CHECK(listed.labels == std::vector<int64_t>{5, 1});
  CHECK(fs::exists(listed.files[0]));
  // A list's labels are whole class numbers, named with the line when not: a size or a timestamp
  // in the second column made that many classes.
  for (const char* bad : {"3.7", "12abc", "1700000000", "-2"}) {
    std::ofstream(list) << "class_0/0.jpg 1\nclass_0/1.jpg " << bad << "\n";
    CHECK_THROWS_WITH_AS(
        data::open_dataset(list),
        doctest::Contains((list + ":2: '" + bad + "' is not a class label (a whole number from 0 to").c_str()),
        data::ImageDecodeError);
  }
  // An image, or a binary file, is not a list.
  CHECK_THROWS_WITH_AS(data::open_dataset(root + "/class_0/0.jpg"), doctest::Contains("0.jpg: an image, not a dataset"),
                       data::ImageDecodeError);
  {
    std::ofstream archive(root + "/images.tar", std::ios::binary);
    archive << "class_0/0.jpg" << std::string(3, '\0') << "ustar";
  }
  CHECK_THROWS_WITH_AS(data::open_dataset(root + "/images.tar"), doctest::Contains("images.tar: not a text file list"),
                       data::ImageDecodeError);
  fs::remove(root + "/images.tar");
  CHECK_THROWS_WITH_AS(data::open_dataset(root + "/missing"), doctest::Contains("no such file or folder"),
                       data::ImageDecodeError);
  fs::create_directories(root + "/empty");
  CHECK_THROWS_WITH_AS(data::open_dataset(root + "/empty"), doctest::Contains("no images"), data::ImageDecodeError);
  // A folder without images stays a class (the labels follow the sorted folder names, so a train/
  // and a val/ with the same folders agree on every label); a hidden folder is never a class.
  fs::create_directories(root + "/.ipynb_checkpoints");
  fs::copy_file(root + "/class_0/0.jpg", root + "/.ipynb_checkpoints/0.jpg");
  std::ofstream(root + "/class_1/._0.jpg") << "AppleDouble metadata, not an image";
  data::Dataset with_empty = data::open_dataset(root);
  CHECK(with_empty.classes == std::vector<std::string>{"class_0", "class_1", "class_2", "empty"});
  CHECK(with_empty.size() == 12);
  CHECK(data::class_mismatch(with_empty, with_empty).empty());
  // Images both directly in the folder and in sub-folders: one layout would drop the others.
  fs::copy_file(root + "/class_0/0.jpg", root + "/stray.jpg");
  CHECK_THROWS_WITH_AS(data::open_dataset(root), doctest::Contains("holds 1 image directly (such as stray.jpg)"),
                       data::ImageDecodeError);
  fs::remove(root + "/stray.jpg");
  // Epoch orders are permutations, different per epoch, identical per (seed, epoch).
  auto a = data::epoch_order(100, 3, 0), b = data::epoch_order(100, 3, 1);
  CHECK(a == data::epoch_order(100, 3, 0));
  CHECK(a != b);
  std::sort(b.begin(), b.end());
  for (int i = 0; i < 100; ++i) CHECK(b[i] == i);
}

TEST_CASE("class_mismatch names the first class that differs between two ImageFolders") {
  data::Dataset train, val;
  train.root = "train";
  val.root = "val";
  train.classes = {"a", "b", "c"};
  val.classes = {"a", "b", "c"};
  CHECK(data::class_mismatch(train, val).empty());
  val.classes = {"a", "c", "d"};  // same count, shifted labels: 'b' is missing from val
  CHECK(data::class_mismatch(train, val) == "class 1 is 'b' in train but 'c' in val");
  val.classes = {"a", "b"};
  CHECK(data::class_mismatch(train, val) == "train has 3 classes and val has 2: 'c' is only in train");
}

TEST_CASE("a balanced subset keeps each class's share, in order, the same for the same seed") {
  // Classes of 50, 30, 7 and 1 images, interleaved.
  data::Dataset d;
  d.root = "/nowhere";
  d.classes = {"a", "b", "c", "d"};
  const int64_t sizes[] = {50, 30, 7, 1};
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t i = 0; i < sizes[c]; ++i) {
      d.files.push_back(fmt::format("{}/{}.jpg", d.classes[c], i));
      d.labels.push_back(c);
    }
  std::shuffle(d.files.begin(), d.files.end(), std::mt19937(1));  // labels follow the names below
  for (int64_t i = 0; i < d.size(); ++i) d.labels[i] = d.files[i][0] - 'a';

  data::Dataset s = data::balanced_subset(d, 0.1, 7, "--knn_train_fraction");
  int64_t per_class[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < s.size(); ++i) {
    ++per_class[s.labels[i]];
    CHECK(s.files[i][0] - 'a' == s.labels[i]);  // each file keeps its own label
  }
  CHECK(per_class[0] == 5);
  CHECK(per_class[1] == 3);
  CHECK(per_class[2] == 1);  // round(0.7)
  CHECK(per_class[3] == 1);  // never an empty class
  CHECK(s.classes == d.classes);
  // In the dataset's order, no repeats.
  std::vector<int64_t> positions;
  for (const auto& f : s.files) positions.push_back(std::find(d.files.begin(), d.files.end(), f) - d.files.begin());
  CHECK(std::is_sorted(positions.begin(), positions.end()));
  CHECK(std::adjacent_find(positions.begin(), positions.end()) == positions.end());
  // Deterministic per seed, different across seeds; 1 keeps everything; bad fractions name the flag.
  CHECK(data::balanced_subset(d, 0.1, 7, "f").files == s.files);
  CHECK(data::balanced_subset(d, 0.1, 8, "f").files != s.files);
  CHECK(data::balanced_subset(d, 1.0, 7, "f").files == d.files);
  CHECK_THROWS_WITH(data::balanced_subset(d, 0.0, 7, "--knn_eval_fraction"),
                    doctest::Contains("--knn_eval_fraction must be in (0, 1]"));
  CHECK_THROWS_WITH(data::balanced_subset(d, 1.5, 7, "--knn_eval_fraction"),
                    doctest::Contains("--knn_eval_fraction must be in (0, 1]"));
  data::Dataset flat = d;
  flat.classes.clear();
  CHECK_THROWS_WITH(data::balanced_subset(flat, 0.5, 7, "--knn_train_fraction"), doctest::Contains("not labelled"));
}

}  // namespace bam::test
