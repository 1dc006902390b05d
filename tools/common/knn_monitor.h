// The kNN monitor bamtrain runs every --knn_freq epochs: features of two labelled image folders
// (--knn_train_path, --knn_val_path) through the frozen backbone, then weighted kNN.
#pragma once

#include "bam/trainer.h"
#include "engine/communicator.h"

namespace bam::tool {

// An empty monitor when --knn_freq is 0 (and not --eval_first). With a process group, every rank
// runs it together: each extracts the features of its slice of both folders, and
// knn_classify_across_ranks (bam/knn.h) merges the ranks' nearest neighbours: the figures one
// process would get.
KnnMonitor make_knn_monitor(const TrainConfig& config, Communicator* group);

}  // namespace bam::tool
