// The training report: output_dir/report.html, one self-contained page (inline SVG charts and
// base64 PNG images, no network) with the curves of loss, lr, weight decay, Sinkhorn target
// entropy, embedding std, img/s and kNN accuracy; a grid of augmented views; and the CLS-token
// attention maps of the last block (per head and averaged) on a few validation images.
// Built from output_dir/steps.jsonl, log.txt and checkpoint.safetensors, so it can be
// regenerated at any time (bamtool report).
#pragma once

#include <string>

namespace bam {

// Writes <output_dir>/report.html; returns its path. Fails naming the missing file if the
// directory has no training logs.
std::string write_training_report(const std::string& output_dir);

}  // namespace bam
