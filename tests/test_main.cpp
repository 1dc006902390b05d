// The doctest entry point shared by every CPU test suite.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/doctest_text.h"
