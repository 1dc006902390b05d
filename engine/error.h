// Errors: one exception type and check macros whose messages say what was expected and where.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace bam {

// Thrown for every user-facing failure: bad shapes, dtypes, devices, files, flags.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace bam

// BAM_CHECK(cond, "fmt {}", args...): throws bam::Error with the formatted message when cond is false.
#define BAM_CHECK(cond, ...)                    \
  do {                                          \
    if (!(cond)) ::bam::fail(__VA_ARGS__);      \
  } while (0)
