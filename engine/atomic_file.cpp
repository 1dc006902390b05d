// write_file_atomically: temporary file, fsync, rename, fsync of the folder.
#include "engine/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>

#include "engine/error.h"
#include "engine/whole_number.h"

namespace bam {

void write_file_atomically(const std::string& path, const std::function<void(const AppendBytes&)>& write) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  BAM_CHECK(fd >= 0, "{}: cannot open for writing: {}", tmp, std::strerror(errno));
  // A failed write only throws; the catch below closes the file (once: a second close could shut a
  // descriptor another thread has been given the same number since) and removes it.
  const AppendBytes append = [&](const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("{}: write failed: {}", tmp, std::strerror(w < 0 ? errno : ENOSPC));
      p += w;
      n -= static_cast<size_t>(w);
    }
  };
  try {
    write(append);
    if (::fsync(fd) != 0) fail("{}: could not flush to disk: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: could not flush to disk: {}", tmp, std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: could not move the new file into place: {}", path, std::strerror(err));
  }
  // Make the rename itself durable.
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  const int dir_fd = ::open(dir.empty() ? "/" : dir.c_str(), O_RDONLY);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void write_file_atomically(const std::string& path, std::string_view contents) {
  write_file_atomically(path, [&](const AppendBytes& append) { append(contents.data(), contents.size()); });
}

std::vector<std::string> remove_abandoned_temporary_files(const std::string& dir,
                                                          const std::function<bool(const std::string&)>& ours) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string name = it->path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos) continue;
    if (!ours(name.substr(0, at))) continue;
    const std::optional<int64_t> writer = parse_whole_number(name.substr(at + 5), 1, INT32_MAX);
    if (!writer) continue;
    const pid_t pid = static_cast<pid_t>(*writer);
    // Still being written by this process, or by another one that runs (kill with signal 0 only asks).
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code remove_error;
    if (fs::remove(it->path(), remove_error)) removed.push_back(name);
  }
  return removed;
}

}  // namespace bam
