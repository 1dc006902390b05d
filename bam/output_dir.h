// The output folder of bamtrain and bamprobe (--output_dir): made and tried before any work, so a
// folder that cannot be written stops the run at once, naming it, instead of after the training.
#pragma once

#include <string>
#include <vector>

namespace bam {

// Creates `dir` and its parents if needed, then creates and removes a file of its own in it. Throws
// bam::Error naming `flag` and `dir` when either fails. Returns the folders it created, `dir`
// first and then each parent it made (none when `dir` existed), for remove_unused_output_dir.
std::vector<std::string> prepare_output_dir(const std::string& dir, const char* flag = "--output_dir");

// Removes the folders prepare_output_dir created, each only while it is empty (rmdir: a folder
// another process has since made inside, or written to, stays, and so do its parents), so that a
// run refused after the folder was made (a bad --data_path, say) leaves nothing behind. Never throws.
void remove_unused_output_dir(const std::vector<std::string>& created);

}  // namespace bam
