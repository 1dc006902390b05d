// The test binary's global operator new, which can be told to refuse allocations of one size on
// other threads (tests/refused_allocations.h); otherwise it is malloc, as the default one.
#include "tests/refused_allocations.h"

#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <thread>

namespace bam::test {
namespace {

std::atomic<std::size_t> refused_size{0};  // 0: refuse nothing
std::atomic<long> refused_count{0};
std::thread::id refusing_thread;  // set before refused_size is published, read after

}  // namespace

RefuseAllocations::RefuseAllocations(std::size_t bytes) {
  if (bytes == 0 || refused_size.load() != 0) throw std::logic_error("RefuseAllocations: one at a time, of a size > 0");
  refusing_thread = std::this_thread::get_id();
  refused_count = 0;
  refused_size.store(bytes);
}

RefuseAllocations::~RefuseAllocations() { refused_size.store(0); }

long RefuseAllocations::refused() { return refused_count.load(); }

}  // namespace bam::test

void* operator new(std::size_t bytes) {
  using namespace bam::test;
  if (bytes == refused_size.load(std::memory_order_acquire) && std::this_thread::get_id() != refusing_thread) {
    ++refused_count;
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
