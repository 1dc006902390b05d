// Chooses the training data source from --data_path.
#include "bam/train_data.h"

#include <filesystem>
#include <optional>

#include "bam/folder_data.h"
#include "bam/train_config.h"
#include "data/image_error.h"
#include "engine/cuda.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/whole_number.h"

namespace bam {

void TrainData::set_object_boxes(std::shared_ptr<const data::ObjectBoxes> boxes) {
  (void)boxes;
  fail("ContrastiveCrop needs an image folder: this data source ({}) makes no crops to place", describe());
}

std::unique_ptr<TrainData> make_train_data(const TrainConfig& config) {
  // The GPU loader creates its buffers on the process's device: select it first (engine/cuda.h).
  Device device;
  if (parse_device(config.device, &device) && device.is_cuda() && cuda::is_available()) {
    try {
      cuda::select_device(device.index);
    } catch (const Error& e) {
      fail("--device {}: {}", config.device, e.what());
    }
  }
  const std::string& path = config.data_path;
  if (path.rfind("synthetic:", 0) == 0) {
    // (At most 2^30 images: each epoch's order is a permutation held in memory, 8 GiB at that size.)
    const std::optional<int64_t> n = parse_whole_number(path.substr(10), 1, int64_t{1} << 30);
    BAM_CHECK(n.has_value(), "--data_path {}: expected synthetic:N with N a whole number of images from 1 to {}", path,
              int64_t{1} << 30);
    return make_synthetic_data(config, *n);
  }
  BAM_CHECK(std::filesystem::exists(path), "--data_path {}: no such folder or file list", path);
  try {
    return make_folder_data(config);
  } catch (const data::ImageDecodeError& e) {
    fail("--data_path {}: {}", path, e.what());
  }
}

}  // namespace bam
