// Checks for numeric flags whose failure a user can read. CLI11 2.1.2's PositiveNumber and
// NonNegativeNumber report "Value 0 not in range 0.000000 to 1797693134862315708..." (their
// bounds are the double range); these say "--nb_knn: must be positive, got 0". Its Range lets
// NaN through (every comparison with NaN is false): finite_range does not.
//
// require_plain_numbers closes two holes in how CLI11 2.1.2 reads numbers, for every option of
// a tool at once: whole numbers go through strtoll(text, 0), so "010" is 8, "0x40" is 64 and a
// value past the 64-bit range silently becomes the largest one; floating-point numbers go
// through strtod, which takes "nan", "inf" and "1e999" (infinite).
#pragma once

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

namespace bam::tool {

namespace detail {

// Empty when `text` is a finite number, which goes to *value; else what is wrong with it.
inline std::string finite_number_problem(const std::string& text, double* value) {
  char* end = nullptr;
  *value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) return "expected a number, got '" + text + "'";
  if (!std::isfinite(*value)) return "expected a finite number, got " + text;
  return {};
}

// Empty when `text` is a plain decimal whole number (an optional sign, then digits) that fits
// 64 bits; else what is wrong with it. Unsigned options take no sign.
inline std::string plain_whole_number_problem(const std::string& text, bool is_unsigned) {
  size_t digits = text.size() > 0 && (text[0] == '-' || text[0] == '+') ? 1 : 0;
  if (is_unsigned && digits == 1 && text[0] == '-') return "must be 0 or more, got " + text;
  bool plain = text.size() > digits;
  for (size_t i = digits; i < text.size(); ++i) plain = plain && text[i] >= '0' && text[i] <= '9';
  if (!plain) return "expected a whole number in decimal digits, got '" + text + "'";
  if (text.size() > digits + 1 && text[digits] == '0')  // C's octal, which CLI11 would read
    return "expected a whole number in decimal digits without leading zeros, got '" + text + "'";
  errno = 0;
  if (is_unsigned)
    (void)std::strtoull(text.c_str(), nullptr, 10);
  else
    (void)std::strtoll(text.c_str(), nullptr, 10);
  if (errno == ERANGE) return "is out of range, got " + text;
  return {};
}

}  // namespace detail

inline CLI::Validator sign_check(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        double value = 0;
        if (std::string problem = detail::finite_number_problem(text, &value); !problem.empty()) return problem;
        if (value > 0 || (zero_allowed && value == 0)) return {};
        return std::string(zero_allowed ? "must be 0 or more" : "must be positive") + ", got " + text;
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}

// A number greater than 0.
inline const CLI::Validator positive_number = sign_check(false);
// A number of at least 0.
inline const CLI::Validator non_negative_number = sign_check(true);

// A finite number in [lo, hi], for floating-point flags (in place of CLI::Range).
inline CLI::Validator finite_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        double value = 0;
        if (detail::finite_number_problem(text, &value).empty() && value >= lo && value <= hi) return {};
        return "must be a number from " + CLI::detail::to_string(lo) + " to " + CLI::detail::to_string(hi) + ", got " +
               text;
      },
      "");
}

// Call after every option of `app` (and of its subcommands) is added, before parsing: each
// whole-number option then takes plain decimal digits within 64 bits, each floating-point
// option a finite number, and anything else stops the tool naming the flag.
inline void require_plain_numbers(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    const std::string type = option->get_type_name();
    const bool is_int = type.rfind("INT", 0) == 0, is_uint = type.rfind("UINT", 0) == 0;
    if (is_int || is_uint)
      option->check(CLI::Validator(
          [is_uint](std::string& text) { return detail::plain_whole_number_problem(text, is_uint); }, ""));
    else if (type.rfind("FLOAT", 0) == 0)
      option->check(CLI::Validator(
          [](std::string& text) {
            double value = 0;
            return detail::finite_number_problem(text, &value);
          },
          ""));
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) require_plain_numbers(*sub);
}

}  // namespace bam::tool
