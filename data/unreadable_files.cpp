// Skipping and reporting files that cannot be decoded.
#include "data/unreadable_files.h"

#include <cstdio>

#include "engine/error.h"

namespace bam::data {

int64_t UnreadableFiles::first_decodable(const std::vector<int64_t>& order, int64_t position,
                                         const std::string& root, const std::function<void(int64_t)>& decode) {
  const int64_t n = static_cast<int64_t>(order.size());
  for (int64_t k = 0; k < n; ++k) {
    const int64_t candidate = order[(position + k) % n];
    try {
      decode(candidate);
      return candidate;
    } catch (const std::exception& e) {
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
