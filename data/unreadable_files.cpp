// Skipping and reporting files that cannot be decoded.
#include "data/unreadable_files.h"

#include <cstdio>
#include <filesystem>

#include "engine/error.h"

namespace bam::data {
namespace {

bool folder_has_entries(const std::string& root) {
  std::error_code ec;
  std::filesystem::directory_iterator it(root.empty() ? "." : root, ec);
  return !ec && it != std::filesystem::directory_iterator();
}

}  // namespace

int64_t UnreadableFiles::first_decodable(const std::vector<int64_t>& order, int64_t position,
                                         const std::string& root, const std::function<void(int64_t)>& decode) {
  const int64_t n = static_cast<int64_t>(order.size());
  std::string last_error;
  for (int64_t k = 0; k < n; ++k) {
    // Hundreds of failures in a row, and the dataset's folder gone or empty (an unmounted share, a
    // stale mount): stop, rather than try (and report) every one of a million files. A folder still
    // there holds a run of damaged files (in file order, as the evaluation reads them), not a loss.
    if (k == kMaxFailuresInARow && !folder_has_entries(root))
      fail(
          "{}: {} images in a row could not be read or decoded (the last: {}), and the folder is gone or empty; is "
          "the dataset still mounted?",
          root, k, last_error);
    const int64_t candidate = order[(position + k) % n];
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (passed_over_.count(candidate)) continue;  // the same file fails the same way
    }
    try {
      decode(candidate);
      return candidate;
    } catch (const std::exception& e) {
      last_error = e.what();
      std::lock_guard<std::mutex> lock(mutex_);
      passed_over_.insert(candidate);
      if (reported_.insert(candidate).second)
        std::fprintf(stderr, "warning: skipping unreadable image (%zu so far): %s\n", reported_.size(), e.what());
    }
  }
  fail("{}: none of the {} images could be decoded", root, n);
}

void UnreadableFiles::retry_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  passed_over_.clear();
}

int64_t UnreadableFiles::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(reported_.size());
}

}  // namespace bam::data
