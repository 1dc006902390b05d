// UnreadableFiles: how both loaders skip an image that cannot be decoded (reported once, counted,
// replaced by the next image of the epoch's order) so that training goes on.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace bam::data {

// Files that failed to decode, reported once each (stderr) and counted. Thread-safe.
class UnreadableFiles {
 public:
  // Calls decode(index) for order[position], order[position + 1], ... (wrapping) until one does
  // not throw, and returns that index; fails when none of the dataset's images decodes, or when
  // kMaxFailuresInARow of them in a row do not and its folder `root` is gone or empty (the dataset
  // has gone, rather than a few files).
  static constexpr int64_t kMaxFailuresInARow = 256;
  int64_t first_decodable(const std::vector<int64_t>& order, int64_t position, const std::string& root,
                          const std::function<void(int64_t)>& decode);
  int64_t count() const;

 private:
  mutable std::mutex mutex_;
  std::set<int64_t> reported_;
};

}  // namespace bam::data
