// Skipping and reporting files that cannot be decoded.
#include "data/unreadable_files.h"

#include <cstdio>

#include "engine/error.h"

namespace bam::data {

int64_t UnreadableFiles::first_decodable(const std::vector<int64_t>& order, int64_t position,
                                         const std::string& root, const std::function<void(int64_t)>& decode) {
  const int64_t n = static_cast<int64_t>(order.size());
  std::string last_error;
  for (int64_t k = 0; k < n; ++k) {
    // Hundreds of failures in a row are not damaged files but a dataset gone (an unmounted share):
    // stop, rather than try (and report) every one of a million files.
    if (k == kMaxFailuresInARow)
      fail("{}: {} images in a row could not be read or decoded (the last: {}); is the dataset still there?", root, k,
           last_error);
    const int64_t candidate = order[(position + k) % n];
    try {
      decode(candidate);
      return candidate;
    } catch (const std::exception& e) {
      last_error = e.what();
      std::lock_guard<std::mutex> lock(mutex_);
      if (reported_.insert(candidate).second)
        std::fprintf(stderr, "warning: skipping unreadable image (%zu so far): %s\n", reported_.size(), e.what());
    }
  }
  fail("{}: none of the {} images could be decoded", root, n);
}

int64_t UnreadableFiles::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(reported_.size());
}

}  // namespace bam::data
