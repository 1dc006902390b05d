// Allocation failures on demand, for the tests of what a loader does when memory runs out: while a
// RefuseAllocations is alive, every `operator new` of exactly the given size on a thread other
// than the one that made it throws std::bad_alloc. The test binary replaces the global operator
// new for this (tests/refused_allocations.cpp); with no refusal set it costs one atomic load.
#pragma once

#include <cstddef>

namespace bam::test {

class RefuseAllocations {
 public:
  explicit RefuseAllocations(std::size_t bytes);  // only one may be alive at a time
  ~RefuseAllocations();
  RefuseAllocations(const RefuseAllocations&) = delete;
  RefuseAllocations& operator=(const RefuseAllocations&) = delete;
  static long refused();  // allocations refused since this one was made
};

}  // namespace bam::test
