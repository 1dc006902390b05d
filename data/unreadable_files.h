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
  // not throw, and returns that index; files that failed since the last retry_all() are passed
  // over without a try (each position of a run of r damaged files decoded the rest of the run:
  // r^2/2 decodes). Fails when none of the dataset's images decodes, or when kMaxFailuresInARow
  // of them in a row do not and its folder `root` is gone or empty (the dataset has gone, rather
  // than a few files).
  static constexpr int64_t kMaxFailuresInARow = 256;
  int64_t first_decodable(const std::vector<int64_t>& order, int64_t position, const std::string& root,
                          const std::function<void(int64_t)>& decode);
  int64_t count() const;
  // Tries every file again from here on (the loaders' start_epoch: a share that was gone may be
  // back). Failures are still reported once each.
  void retry_all();

 private:
  mutable std::mutex mutex_;
  std::set<int64_t> reported_;     // every file that ever failed
  std::set<int64_t> passed_over_;  // those failed since the last retry_all()
};

}  // namespace bam::data
