// Activation checkpointing: a segment of the forward pass that keeps only its input for backward.
// The segment first runs with gradient recording off, so none of its inside activations stay
// alive; backward runs it again, this time recording, from the saved input, and backpropagates
// through that second graph. Memory for the segment's activations is traded for one more forward.
// The recomputation sees the forward's conditions again: the autocast type, and the default
// generator's key and position (so drop_path draws the same masks). Everything else the segment
// computes must depend on its input and parameters alone: a module's training flag must not change
// between forward and backward, and no other thread may draw from the default generator meanwhile.
#pragma once

#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace bam {

// segment(x) with checkpointing when gradients are being recorded (else just segment(x)).
// `parameters` are the leaves the segment reads (their .grad accumulates during backward); they,
// or x, must require grad for a gradient to flow.
Tensor checkpoint(const char* name, std::function<Tensor(const Tensor&)> segment, const Tensor& x,
                  const std::vector<Tensor>& parameters);

}  // namespace bam
