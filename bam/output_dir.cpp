// prepare_output_dir: see output_dir.h.
#include "bam/output_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

#include "engine/error.h"

namespace bam {

std::vector<std::string> prepare_output_dir(const std::string& dir, const char* flag) {
  namespace fs = std::filesystem;
  BAM_CHECK(!dir.empty(), "{} is empty: name a folder for the run's files", flag);
  std::error_code error;
  // The folders that do not exist yet, deepest first: what create_directories makes.
  std::vector<std::string> created;
  fs::path p = fs::absolute(dir, error).lexically_normal();
  if (!error && p.filename().empty()) p = p.parent_path();  // "runs/x/": the folder, not an empty name
  while (!error && !p.empty()) {
    std::error_code missing;  // set for a path not found too
    if (fs::symlink_status(p, missing).type() != fs::file_type::not_found) break;
    created.push_back(p.string());
    if (p == p.parent_path()) break;
    p = p.parent_path();
  }
  error.clear();
  fs::create_directories(dir, error);
  BAM_CHECK(!error, "{} {}: cannot create the folder: {}", flag, dir, error.message());
  // A folder can exist and still refuse files (read-only, another user's). The test file's name is
  // this process's own; O_EXCL | O_NOFOLLOW never opens an existing file or follows a link.
  const std::string probe = (fs::path(dir) / (".bam_write_test." + std::to_string(::getpid()))).string();
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (fd < 0) {
    const std::string reason = std::error_code(errno, std::generic_category()).message();
    remove_unused_output_dir(created);
    fail("{} {}: cannot write in the folder: {}", flag, dir, reason);
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return created;
}

void remove_unused_output_dir(const std::vector<std::string>& created) {
  for (const std::string& folder : created) {
    std::error_code error;
    // remove() on a folder is rmdir: it fails on one that holds anything, which then stays, with
    // every parent above it.
    if (!std::filesystem::remove(folder, error) || error) return;
  }
}

}  // namespace bam
