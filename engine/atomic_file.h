// Files replaced whole or not at all: the checkpoints, probe.json, report.html and the logs that a
// resumed run trims. A crash at any moment leaves either the old file or the new one, never a
// mixture or a cut-off file.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace bam {

// Appends bytes to the file being written.
using AppendBytes = std::function<void(const void* data, size_t size)>;

// Writes `path` through a temporary file beside it (<path>.tmp.<pid>): `write` appends the
// contents, the file is flushed to disk, renamed over `path`, and the folder is flushed so that
// the rename is durable too. Throws bam::Error naming the file when a step fails (the temporary
// file is removed then, and `path` is left as it was).
void write_file_atomically(const std::string& path, const std::function<void(const AppendBytes&)>& write);

// The same for contents held in memory.
void write_file_atomically(const std::string& path, std::string_view contents);

// Removes the temporary files (<name>.tmp.<pid>) in `dir` that a process no longer running left
// there by crashing mid-write (a cut-off checkpoint can take hundreds of MB). Returns their names.
// Only those whose <name> `ours` accepts: a tool's folder may be shared (the current one by
// default), and other programs' temporary files there are not its to remove.
std::vector<std::string> remove_abandoned_temporary_files(const std::string& dir,
                                                          const std::function<bool(const std::string&)>& ours);

}  // namespace bam
