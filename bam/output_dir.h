// The output folder of bamtrain and bamprobe (--output_dir): made and tried before any work, so a
// folder that cannot be written stops the run at once, naming it, instead of after the training.
#pragma once

#include <string>

namespace bam {

// Creates `dir` and its parents if needed, then creates and removes a file of its own in it. Throws
// bam::Error naming `flag` and `dir` when either fails. Returns the outermost folder it created
// ("" when `dir` existed), for remove_unused_output_dir.
std::string prepare_output_dir(const std::string& dir, const char* flag = "--output_dir");

// Removes the folder that prepare_output_dir created, when nothing but folders was written under it:
// a run refused after the folder was made (a bad --data_path, say) leaves nothing behind. Never
// throws; does nothing for "".
void remove_unused_output_dir(const std::string& created);

}  // namespace bam
