// The kNN monitor bamtrain runs every --knn_freq epochs: features of two labelled image folders
// (--knn_train_path, --knn_val_path) through the frozen backbone, then weighted kNN.
#pragma once

#include <string>
#include <utility>

#include "bam/trainer.h"
#include "engine/communicator.h"

namespace bam::tool {

// An empty monitor when --knn_freq is 0 (and not --eval_first). With a process group, every rank
// runs it together: each extracts the features of its slice of both folders, and
// knn_classify_across_ranks (bam/knn.h) merges the ranks' nearest neighbours: the figures one
// process would get.
KnnMonitor make_knn_monitor(const TrainConfig& config, Communicator* group);

// The monitor's train and val folders (the flags, or .../train and the .../val beside it); empty
// when the monitor is off. Throws naming the flags when it is on without them: bamtrain asks this
// before it lists the training images, so that the mistake costs no wait.
std::pair<std::string, std::string> knn_monitor_folders(const TrainConfig& config);

}  // namespace bam::tool
