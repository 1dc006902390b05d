// kNN monitor construction.
#include "tools/common/knn_monitor.h"

#include "engine/error.h"

namespace bam::tool {

KnnMonitor make_knn_monitor(const TrainConfig& config) {
  if (config.knn_freq == 0) return {};
  fail("--knn_freq {}: the kNN monitor reads labelled image folders, which needs the data module (bam_data) in this "
       "build",
       config.knn_freq);
}

}  // namespace bam::tool
