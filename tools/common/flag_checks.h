// Checks for numeric flags whose failure a user can read. CLI11 2.1.2's PositiveNumber and
// NonNegativeNumber report "Value 0 not in range 0.000000 to 1797693134862315708..." (their
// bounds are the double range); these say "--nb_knn: must be positive, got 0".
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <string>

namespace bam::tool {

inline CLI::Validator sign_check(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        char* end = nullptr;
        double value = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) return "expected a number, got '" + text + "'";
        if (!std::isfinite(value)) return "expected a finite number, got " + text;
        if (value > 0 || (zero_allowed && value == 0)) return {};
        return std::string(zero_allowed ? "must be 0 or more" : "must be positive") + ", got " + text;
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}

// A number greater than 0.
inline const CLI::Validator positive_number = sign_check(false);
// A number of at least 0.
inline const CLI::Validator non_negative_number = sign_check(true);

}  // namespace bam::tool
