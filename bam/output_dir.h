// The output folder of bamtrain and bamprobe (--output_dir): made and tried before any work, so a
// folder that cannot be written stops the run at once, naming it, instead of after the training.
#pragma once

#include <string>

namespace bam {

// Creates `dir` and its parents if needed, then creates and removes a file of its own in it. Throws
// bam::Error naming `flag` and `dir` when either fails.
void prepare_output_dir(const std::string& dir, const char* flag = "--output_dir");

}  // namespace bam
