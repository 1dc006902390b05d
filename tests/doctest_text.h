// doctest, with C strings in messages printed as text. doctest 2.4.9 prints a `const char*` that
// reaches INFO/CAPTURE/MESSAGE (dtype_name(), e.what(), `cond ? "a" : "b"`) as its address, and
// its own switch for this (DOCTEST_CONFIG_TREAT_CHAR_STAR_AS_STRING) does not compile. Every test
// file includes doctest through this header, so every file sees the same specialisations.
#pragma once

#include <doctest/doctest.h>

namespace doctest {

template <>
struct StringMaker<const char*> {
  static String convert(const char* text) { return text ? text : "(null)"; }
};

template <>
struct StringMaker<char*> {
  static String convert(const char* text) { return StringMaker<const char*>::convert(text); }
};

}  // namespace doctest
