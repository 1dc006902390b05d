// The kNN monitor bamtrain runs every --knn_freq epochs: features of two labelled image folders
// (--knn_train_path, --knn_val_path) through the frozen backbone, then weighted kNN.
#pragma once

#include "bam/trainer.h"

namespace bam::tool {

// An empty monitor when --knn_freq is 0.
KnnMonitor make_knn_monitor(const TrainConfig& config);

}  // namespace bam::tool
