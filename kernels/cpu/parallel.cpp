// The thread pool behind parallel_for: N-1 workers plus the calling thread, woken per region.
#include "kernels/cpu/parallel.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/whole_number.h"

namespace bam::cpu {
namespace {

thread_local bool t_in_region = false;

int threads_from_environment() {
  const int requested = num_threads_requested();
  return requested > 0 ? requested : available_cores();
}

// How long a thread that waits for the pool (a worker for the next region, the caller for the
// workers to finish) keeps checking before it sleeps on a condition variable. A training step runs
// thousands of short regions back to back; waking a sleeping thread is a system call on each side
// and tens of microseconds of latency (more in a virtual machine), while the gap between two
// regions is mostly a few microseconds of the caller's own work.
constexpr std::chrono::microseconds kSpin{50};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Checks ready() until it holds or kSpin has passed; returns ready(). With more threads in the pool
// than cores to run them (`spin` false), a spinning thread could hold the core the awaited one
// needs: it checks once and goes to sleep.
template <typename Ready>
bool spin_until(bool spin, const Ready& ready) {
  if (!spin) return ready();
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

// A region publishes a job (task count + function) and bumps the generation; every participant
// pulls task indices from an atomic counter. Waiting threads spin a while (spin_until), then sleep
// on a condition variable; the mutex orders the sleeping against the bumps and the last worker's
// "done", so that no wake-up is lost.
class ThreadPool {
 public:
  explicit ThreadPool(int n) { start(n); }
  ~ThreadPool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    std::lock_guard<std::mutex> region(region_mutex_);
    stop();
    start(n);
  }

  void run(int num_tasks, const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> region(region_mutex_);  // one region at a time
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      num_tasks_ = num_tasks;
      next_task_.store(0);
      busy_workers_.store(static_cast<int>(workers_.size()));
      generation_.fetch_add(1, std::memory_order_release);  // publishes the job to spinning workers
    }
    wake_.notify_all();  // (no system call when no worker sleeps)
    work_on_tasks(fn, num_tasks);
    // Every worker is done with `fn` (which lives in the caller's frame) before this returns or
    // throws.
    const auto finished = [&] { return busy_workers_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(spin_, finished)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, finished);
    }
    job_ = nullptr;
    std::exception_ptr error;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::swap(error, error_);
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  void start(int n) {
    quit_ = false;
    spin_ = n <= available_cores();
    // Workers start from the current generation; reading it inside the thread instead could
    // miss a job published before the thread got going.
    uint64_t generation = generation_;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, generation] { worker_loop(generation); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  // A task that throws (an allocation in a kernel) ends the region: the tasks not started are
  // skipped, and run() rethrows the first exception on the caller's thread once every worker is
  // done; on a worker it would have ended the process.
  void work_on_tasks(const std::function<void(int)>& fn, int num_tasks) {
    struct InRegion {
      InRegion() { t_in_region = true; }
      ~InRegion() { t_in_region = false; }
    } in_region;
    try {
      for (int task = next_task_.fetch_add(1); task < num_tasks; task = next_task_.fetch_add(1)) fn(task);
    } catch (...) {
      next_task_.store(num_tasks);
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      // The next region cannot be published before this worker has counted itself done with the
      // last one, so the generation moves on by exactly one.
      const auto published = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(spin_, published)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, published);
      }
      seen = generation_.load(std::memory_order_acquire);
      if (quit_) return;
      // Written before the generation's release, read after its acquire.
      if (const std::function<void(int)>* job = job_) work_on_tasks(*job, num_tasks_);
      if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be between its check and its sleep
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int)>* job_ = nullptr;
  int num_tasks_ = 0;
  std::atomic<int> busy_workers_{0};
  std::atomic<uint64_t> generation_{0};
  bool quit_ = false;  // (written before a generation's release, like job_)
  bool spin_ = true;   // whether waiting threads spin first (written before the workers start)
  std::atomic<int> next_task_{0};
  std::exception_ptr error_;  // a task's exception in this region (guarded by mutex_)
};

std::mutex g_pool_mutex;
ThreadPool* g_pool = nullptr;
int g_num_threads = 0;

ThreadPool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) {
    if (g_num_threads == 0) g_num_threads = threads_from_environment();
    g_pool = new ThreadPool(g_num_threads);  // lives until exit; workers are joined never
  }
  return *g_pool;
}

}  // namespace

int num_threads_requested() {
  if (const char* env = std::getenv("BAM_NUM_THREADS"))
    if (const std::optional<int64_t> n = parse_whole_number(env, 1, kMaxThreads)) return static_cast<int>(*n);
  return 0;
}

int available_cores() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0 && CPU_COUNT(&mask) > 0) return CPU_COUNT(&mask);
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

int num_threads() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_num_threads == 0) g_num_threads = threads_from_environment();
  return g_num_threads;
}

void set_num_threads(int n) {
  n = std::max(1, n);
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    g_num_threads = n;
    if (!g_pool) return;
  }
  g_pool->resize(n);
}

bool in_parallel_region() { return t_in_region; }

void parallel_tasks(int num_tasks, const std::function<void(int)>& fn) {
  if (num_tasks <= 0) return;
  if (num_tasks == 1 || t_in_region || num_threads() == 1) {
    for (int t = 0; t < num_tasks; ++t) fn(t);
    return;
  }
  pool().run(num_tasks, fn);
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int threads = num_threads();
  if (n <= grain || threads == 1 || t_in_region) {
    fn(0, n);
    return;
  }
  // A few chunks per thread balance uneven work without much scheduling overhead.
  int64_t max_chunks = static_cast<int64_t>(threads) * 4;
  int64_t chunks = std::min<int64_t>(max_chunks, (n + grain - 1) / grain);
  int64_t chunk = (n + chunks - 1) / chunks;
  chunks = (n + chunk - 1) / chunk;
  parallel_tasks(static_cast<int>(chunks), [&](int c) {
    int64_t begin = c * chunk;
    fn(begin, std::min(n, begin + chunk));
  });
}

}  // namespace bam::cpu
