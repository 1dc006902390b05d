// Where an evaluation of frozen features (the kNN vote, the linear probe) computes: on the
// backbone's GPU when what it needs there fits, so that a large feature bank is not left to the
// host's cores; else on the host.
#pragma once

#include <cstdint>
#include <string>

#include "engine/device.h"

namespace bam {

struct EvaluationDevice {
  Device device = Device::cpu();
  // For a backbone on a GPU: "cuda:0", or why the host ("the host: it needs ..."). Empty when the
  // backbone is on the host, where everything else is too.
  std::string note;
};

// `bytes` is what the evaluation takes on a GPU (knn_device_bytes, linear_probe_device_bytes). It
// must fit in four fifths of cuda::memory_available(), the rest left to the allocator's slack
// (and to training, for the kNN monitor). A backbone on the host evaluates on the host.
// Ranks that share one GPU (more ranks than GPUs) share what it has: each takes its part.
EvaluationDevice evaluation_device(Device backbone_device, int64_t bytes);

// How many ranks run on this process's GPU, this one included (GpuPlacement::sharing_mine, set
// once by the tool when it joins the ranks; 1 by default).
void set_ranks_sharing_gpu(int ranks);

}  // namespace bam
