// Tests for the CPU thread pool (kernels/cpu/parallel.h): every task of every region runs exactly
// once, regions follow each other back to back (workers still spinning) and after pauses (workers
// asleep), the workers take part, the pool can be resized between regions, and nested regions run
// serially. (Pools of more threads than cores skip the spinning: on a 2-core machine the 3- and
// 4-thread cases take that path.)
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "tests/doctest_text.h"

namespace {

struct RestoreThreads {
  int threads = bam::cpu::num_threads();
  ~RestoreThreads() { bam::cpu::set_num_threads(threads); }
};

// Runs one region of `tasks` tasks; returns how many tasks ran other than exactly once.
int64_t tasks_not_run_once(int tasks) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(tasks));
  for (auto& r : runs) r.store(0);
  bam::cpu::parallel_tasks(tasks, [&](int t) { runs[static_cast<size_t>(t)].fetch_add(1); });
  int64_t wrong = 0;
  for (auto& r : runs) wrong += r.load() != 1;
  return wrong;
}

}  // namespace

TEST_CASE("thread pool: every task of every region runs once, back to back and after the workers sleep") {
  RestoreThreads restore;
  for (int threads : {2, 3}) {
    bam::cpu::set_num_threads(threads);
    int64_t wrong = 0;
    // Back to back: the workers are still spinning when the next region is published.
    for (int region = 0; region < 20000; ++region) wrong += tasks_not_run_once(1 + region % 7);
    CHECK_MESSAGE(wrong == 0, "threads=", threads, " back to back");
    // With pauses longer than the spin: the workers (and the caller's wait) fall asleep.
    for (int region = 0; region < 40; ++region) {
      wrong += tasks_not_run_once(1 + region % 5);
      std::this_thread::sleep_for(std::chrono::microseconds(region % 2 ? 300 : 20));
    }
    CHECK_MESSAGE(wrong == 0, "threads=", threads, " with pauses");
    // parallel_for covers [0, n) once, in chunks of at least the grain.
    for (int64_t n : {1, 5, 64, 1000, 12345}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
      for (auto& s : seen) s.store(0);
      bam::cpu::parallel_for(n, 7, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) seen[static_cast<size_t>(i)].fetch_add(1);
      });
      int64_t bad = 0;
      for (auto& s : seen) bad += s.load() != 1;
      CHECK_MESSAGE(bad == 0, "threads=", threads, " parallel_for n=", n);
    }
  }
}

TEST_CASE("thread pool: the workers take part, awake or woken from sleep") {
  RestoreThreads restore;
  bam::cpu::set_num_threads(2);
  // Two tasks that each wait for the other to have started: they finish only if a worker runs one
  // while the caller runs the other (the wait gives up after two seconds).
  for (int round = 0; round < 6; ++round) {
    std::atomic<int> started{0};
    std::atomic<int> met{0};
    bam::cpu::parallel_tasks(2, [&](int) {
      started.fetch_add(1);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      while (started.load() < 2 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
      if (started.load() == 2) met.fetch_add(1);
    });
    CHECK_MESSAGE(met.load() == 2, "round ", round);
    if (round % 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let the worker sleep
  }
}

TEST_CASE("thread pool: resized between regions, and nested regions run serially") {
  RestoreThreads restore;
  for (int threads : {1, 4, 2, 3, 1, 2}) {
    bam::cpu::set_num_threads(threads);
    CHECK(bam::cpu::num_threads() == threads);
    CHECK_MESSAGE(tasks_not_run_once(9) == 0, "threads=", threads);
  }
  bam::cpu::set_num_threads(2);
  std::atomic<int64_t> inner{0};
  std::atomic<int> nested_in_region{0};
  CHECK_FALSE(bam::cpu::in_parallel_region());
  bam::cpu::parallel_tasks(4, [&](int) {
    nested_in_region.fetch_add(bam::cpu::in_parallel_region() ? 1 : 0);
    bam::cpu::parallel_for(100, 1, [&](int64_t begin, int64_t end) { inner.fetch_add(end - begin); });
  });
  CHECK(inner.load() == 400);
  CHECK(nested_in_region.load() == 4);
  CHECK_FALSE(bam::cpu::in_parallel_region());
}

TEST_CASE("thread pool: a task that throws ends its region, and the caller gets the exception") {
  // An allocation failing in a kernel's task: on a worker it ended the process (std::terminate),
  // on the caller it unwound while the workers still ran the caller's function.
  RestoreThreads restore;
  bam::cpu::set_num_threads(3);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int64_t> ran{0};
    bool thrown = false;
    try {
      bam::cpu::parallel_for(1000, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          if (i == 500 - round * 7) throw std::runtime_error("task failed");
          ++ran;
        }
      });
    } catch (const std::runtime_error& e) {
      thrown = std::string(e.what()) == "task failed";
    }
    CHECK(thrown);
    CHECK_FALSE(bam::cpu::in_parallel_region());
    // The pool works on, in parallel.
    std::atomic<int64_t> sum{0};
    bam::cpu::parallel_for(1000, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum += i;
    });
    CHECK(sum.load() == 999 * 1000 / 2);
  }
  // The tasks not yet started when one throws are skipped: task 0 throws at once and every other
  // task takes a millisecond, so a pool that ran them all would count 9,999 (about 5 s on the two
  // threads left); skipped, the others finish the few they had taken. (The bound leaves seconds
  // for a loaded machine to deschedule the throwing thread.)
  std::atomic<int> started{0};
  CHECK_THROWS_AS(bam::cpu::parallel_tasks(10000,
                                           [&](int task) {
                                             if (task == 0) throw std::runtime_error("first task failed");
                                             ++started;
                                             std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                           }),
                  std::runtime_error);
  MESSAGE("tasks started after the first threw: " << started.load());
  CHECK(started.load() < 5000);
}
