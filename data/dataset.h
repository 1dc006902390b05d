// Image datasets: an ImageFolder (class subfolders give labels, sorted like torchvision), a flat
// folder of unlabelled images, or a file list (one path per line, optionally followed by an
// integer label). Deterministic per-epoch shuffling from the seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bam::data {

struct Dataset {
  std::string root;
  std::vector<std::string> files;    // absolute or root-relative paths, in index order
  std::vector<int64_t> labels;       // per file; -1 when unlabelled
  std::vector<std::string> classes;  // class names (ImageFolder), empty otherwise
  // The index files[0] has in the dataset this one is a part of (contiguous_part), else 0 (a
  // balanced_subset is a dataset of its own). An image's random crops are keyed by first_index +
  // its index, so a part's crops are the whole's; everything else (boxes, the visiting order, a
  // damaged file's stand-in) counts within the part.
  int64_t first_index = 0;
  int64_t size() const { return static_cast<int64_t>(files.size()); }
  int64_t num_classes() const { return static_cast<int64_t>(classes.size()); }
};

// The image extensions torchvision accepts (case-insensitive).
bool has_image_extension(const std::string& path);

// Picks the layout: a .txt file is a file list; a folder whose entries include subfolders with
// images is an ImageFolder; otherwise a flat folder. Prints indexing progress for big folders to
// stderr. Fails (naming the path) when the path is missing or holds no image, and when it holds
// images both directly and in sub-folders (one layout would drop the others).
Dataset open_dataset(const std::string& path);
// Every sub-folder not starting with '.' is a class, in sorted order (torchvision's class_to_idx);
// one without images stays an empty class, with a warning on stderr.
Dataset open_image_folder(const std::string& root);
Dataset open_flat_folder(const std::string& root);
Dataset open_file_list(const std::string& list_path);

// "" when a and b have the same classes in the same order (so that a label means the same class in
// both, as a train/ and a val/ folder must), else the first difference, naming both roots.
std::string class_mismatch(const Dataset& a, const Dataset& b);

// The visiting order of an epoch: a permutation of [0, n) keyed by (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// A class-balanced random fraction of a labelled dataset (the official kNN monitor's
// --knn_train_fraction): from each class, round(fraction x its size) images, at least one, chosen
// by a permutation keyed by seed, in their original order. fraction must be in (0, 1]; 1 returns
// the dataset unchanged. `flag` names the setting in errors.
Dataset balanced_subset(const Dataset& dataset, double fraction, uint64_t seed, const char* flag);

// Slice `part` of `parts` equal contiguous slices (images [part*N/parts, (part+1)*N/parts), so
// their sizes differ by at most one): how the ranks of a data-parallel run share a pass over a
// folder. The slices in part order are the whole dataset; one may be empty when parts > N.
Dataset contiguous_part(const Dataset& dataset, int64_t part, int64_t parts);

// What ranks compare to know that they read the same images: the image count, then each file's
// name within the root (the root itself may be mounted elsewhere on each machine) and its label,
// one a line.
std::string dataset_listing(const Dataset& dataset);

}  // namespace bam::data
