// The CUDA emulator's scheduler: each thread of a block is a fiber, run until it finishes or
// waits at a barrier; when none can run, the barriers whose threads have all arrived are released.
// Anything else at that point is a deadlock on a GPU too, and is reported.
#include <sys/mman.h>

#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/emulator/cuda_emulator.h"
#include "kernels/cuda/emulator/emulator_state.h"

// Fiber switching: saves the callee-saved registers on the current stack, stores its pointer in
// *save, and continues on the stack `load` from the point where it was saved (or, for a new
// fiber, at its entry function). ucontext's swapcontext would do the same plus two system calls
// (the signal mask) per switch, which dominated the emulator's run time.
#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif
extern "C" void bam_emu_switch(void** save, void* load);
asm(R"(
  .text
  .globl bam_emu_switch
  .type bam_emu_switch, @function
bam_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size bam_emu_switch, .-bam_emu_switch
  .section .note.GNU-stack, "", @progbits
  .text
)");

// AddressSanitizer keeps a map of which memory is addressable, stacks included: each switch
// between the scheduler's stack and a fiber's is announced to it (start before, finish after), so
// that it checks a kernel's locals on the right stack and unwinds an exception thrown in a fiber
// (scripts/sanitize.sh --emulator). Elsewhere the two calls compile to nothing.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define BAM_EMU_ADDRESS_SANITIZER 1
#endif

// ThreadSanitizer as a race checker for kernels (scripts/sanitize.sh --emulator-races): each
// fiber is a TSan fiber, and the only happens-before edges between the threads of a block are the
// ones a GPU guarantees: __syncthreads() (all the block's threads) and a warp operation (the lanes
// of its mask). An access to shared or global memory that conflicts with another thread's and is
// ordered by neither is reported as a data race, with both threads' stacks. Blocks are ordered
// one after the next (a launch's writes are seen by the next launch, and static __shared__ arrays
// are reused), so a race between two blocks is not seen. This file itself is built without TSan's
// instrumentation: the scheduler's bookkeeping is not the kernels' business.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/tsan_interface.h>
#define BAM_EMU_THREAD_SANITIZER 1
#endif

namespace bam::emu {

namespace {

constexpr size_t kStackBytes = 256 * 1024;

#if BAM_EMU_ADDRESS_SANITIZER
void starting_switch(void** fake_stack, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
}
void finished_switch(void* fake_stack, const void** from_bottom = nullptr, size_t* from_size = nullptr) {
  __sanitizer_finish_switch_fiber(fake_stack, from_bottom, from_size);
}
#else
void starting_switch(void**, const void*, size_t) {}
void finished_switch(void*, const void** = nullptr, size_t* = nullptr) {}
#endif

// The happens-before edges ThreadSanitizer is told about: `release` publishes what the calling
// fiber has done so far at `token`; `acquire` makes all that was released there visible.
#if BAM_EMU_THREAD_SANITIZER
void release(void* token) { __tsan_release(token); }
void acquire(void* token) { __tsan_acquire(token); }
void* new_race_fiber() { return __tsan_create_fiber(0); }
void* current_race_fiber() { return __tsan_get_current_fiber(); }
void destroy_race_fiber(void* fiber) { __tsan_destroy_fiber(fiber); }
// With `sync`, what the caller did before happens before what the fiber does next.
void switching_to(void* fiber, bool sync) { __tsan_switch_to_fiber(fiber, sync ? 0 : __tsan_switch_to_fiber_no_sync); }
#else
void release(void*) {}
void acquire(void*) {}
void* new_race_fiber() { return nullptr; }
void* current_race_fiber() { return nullptr; }
void destroy_race_fiber(void*) {}
void switching_to(void*, bool) {}
#endif

enum class State { ready, at_block_barrier, at_warp_operation, done };

struct Fiber {
  void* sp = nullptr;  // its saved stack pointer while it is suspended
  State state = State::ready;
  uint3 thread;
  unsigned mask = 0;
  const char* what = nullptr;
  void* lane_data = nullptr;
  Combine combine = nullptr;
  unsigned char* stack = nullptr;  // its lowest address; kStackBytes long
  void* fake_stack = nullptr;      // AddressSanitizer's, while it is suspended
  void* race_fiber = nullptr;      // ThreadSanitizer's
  unsigned barriers_passed = 0;    // __syncthreads() calls completed in this block
  void* warp_token = nullptr;      // the warp operation it waits at, for ThreadSanitizer
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<int> warp_waiting;  // per warp: lanes at a warp operation
  void* scheduler_sp = nullptr;
  const void* scheduler_stack = nullptr;  // the scheduler's stack, for AddressSanitizer
  size_t scheduler_stack_bytes = 0;
  void* scheduler_fake_stack = nullptr;
  void* scheduler_race_fiber = nullptr;
  // ThreadSanitizer's tokens: __syncthreads() number k releases and acquires barrier_tokens[k % 2]
  // (a thread may arrive at barrier k + 1 before the last of the others leaves barrier k, but not
  // at k + 2); each warp operation has a token of its own; a thread that ends releases block_end.
  char barrier_tokens[2] = {};
  std::deque<char> warp_tokens;
  char block_end = 0;
  size_t current = 0;
  const std::function<void()>* body = nullptr;
  std::vector<unsigned char> shared_storage;
  unsigned char* shared = nullptr;  // 128-byte aligned, inside shared_storage
  size_t shared_bytes = 0;
  std::string fault;  // set by the kernel's thread (an exception) or by the scheduler
  const LaunchConfig* config = nullptr;
};

thread_local BlockRun* t_block = nullptr;

// A sanitizer's report stops the program inside a fiber: this says which kernel launch, block and
// thread it was (the report's stack names the kernel's line, but not its coordinates).
#if BAM_EMU_ADDRESS_SANITIZER || BAM_EMU_THREAD_SANITIZER
void name_the_thread_at_death() {
  const BlockRun* run = t_block;
  if (!run || !run->config) return;
  const Coordinates& c = g_coordinates;
  std::fprintf(stderr, "CUDA emulator: in the kernel launched at %s:%d, block (%u,%u,%u), thread (%u,%u,%u)\n",
               run->config->file, run->config->line, c.block.x, c.block.y, c.block.z, c.thread.x, c.thread.y,
               c.thread.z);
}
#endif

// Fiber stacks are mapped once per host thread, reused by every block and unmapped when the
// thread ends. Below each stack are inaccessible pages: an overflow faults there instead of
// writing over the next fiber's stack.
constexpr size_t kGuardPage = 64 * 1024;  // wider than a kernel's largest stack frame
struct StackPool {
  std::vector<unsigned char*> stacks;  // each kStackBytes, above its guard page
  std::vector<void*> race_fibers;      // ThreadSanitizer's fiber of each stack's thread
  ~StackPool() {
    for (unsigned char* s : stacks) munmap(s - kGuardPage, kStackBytes + kGuardPage);
    for (void* f : race_fibers) destroy_race_fiber(f);
  }
};
thread_local StackPool t_stacks;
unsigned char* stack_for(size_t i) {
  StackPool& pool = t_stacks;
  while (pool.stacks.size() <= i) {
    void* p = mmap(nullptr, kStackBytes + kGuardPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("CUDA emulator: cannot map a fiber stack");
    if (mprotect(p, kGuardPage, PROT_NONE) != 0)
      throw std::runtime_error("CUDA emulator: cannot protect a stack guard");
    pool.stacks.push_back(static_cast<unsigned char*>(p) + kGuardPage);
    pool.race_fibers.push_back(new_race_fiber());
  }
  return pool.stacks[i];
}

template <typename Xyz>  // uint3 or dim3
std::string str(Xyz v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

// Switches from the running fiber to the scheduler; returns when the scheduler resumes it.
void to_scheduler(BlockRun& run, Fiber& self) {
  switching_to(run.scheduler_race_fiber, false);
  starting_switch(&self.fake_stack, run.scheduler_stack, run.scheduler_stack_bytes);
  bam_emu_switch(&self.sp, run.scheduler_sp);
  finished_switch(self.fake_stack);
}

void fiber_main() {
  BlockRun& run = *t_block;
  Fiber& self = run.fibers[run.current];
  finished_switch(nullptr, &run.scheduler_stack, &run.scheduler_stack_bytes);
  try {
    (*run.body)();
  } catch (const std::exception& e) {
    if (run.fault.empty()) run.fault = "thread " + str(self.thread) + " threw: " + e.what();
  } catch (...) {
    if (run.fault.empty()) run.fault = "thread " + str(self.thread) + " threw";
  }
  self.state = State::done;
  release(&run.block_end);
  switching_to(run.scheduler_race_fiber, false);
  starting_switch(nullptr, run.scheduler_stack, run.scheduler_stack_bytes);  // nullptr: this fiber ends
  bam_emu_switch(&self.sp, run.scheduler_sp);  // never resumed
  __builtin_unreachable();
}

// A new fiber's stack: bam_emu_switch pops six zero registers and returns into fiber_main, which
// then sees the stack as a called function does (rsp + 8 a multiple of 16).
void* initial_stack(unsigned char* stack) {
  auto* sp = reinterpret_cast<uintptr_t*>(stack + kStackBytes);
  *--sp = 0;  // fiber_main's return address: it never returns
  *--sp = reinterpret_cast<uintptr_t>(&fiber_main);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  return sp;
}

// After a fault the block's fibers are abandoned where they wait, their frames' redzones still
// marked on their stacks: cleared for AddressSanitizer before the stacks are used again.
void abandon_fibers([[maybe_unused]] BlockRun& run) {
#if BAM_EMU_ADDRESS_SANITIZER
  for (Fiber& f : run.fibers) {
    if (f.state != State::done && f.stack) ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);
    f.fake_stack = nullptr;
  }
#endif
}

// Suspends the running fiber in `state` and returns to the scheduler.
void suspend(State state) {
  BlockRun* run = t_block;
  if (!run) throw std::logic_error("CUDA emulator: a device function was called outside a kernel");
  Fiber& self = run->fibers[run->current];
  self.state = state;
  to_scheduler(*run, self);
  // Resumed: the scheduler has set g_coordinates for this thread.
}

// The group of lanes waiting in the warp at `base` with the mask of lane `first`: if every lane
// that mask names has arrived at the same operation, runs the operation, makes them ready and
// returns true. A lane named by the mask that has exited, waits at __syncthreads() or at another
// operation is a fault: `problem` says which (the caller decides whether waiting longer helps).
bool release_group(BlockRun& run, size_t base, size_t first, std::string* problem) {
  const size_t n = run.fibers.size();
  const Fiber& f = run.fibers[first];
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(f.mask >> lane & 1u)) continue;
    const size_t i = base + lane;
    auto who = [&] {
      return "thread " + str(f.thread) + " waits at " + f.what + " with mask " + std::to_string(f.mask) +
             ", which names lane " + std::to_string(lane);
    };
    if (i >= n) {
      *problem = who() + ", beyond the block";
      return false;
    }
    const Fiber& g = run.fibers[i];
    if (g.state == State::done) {
      *problem = who() + ", a thread that has exited";
      return false;
    }
    if (g.state == State::at_block_barrier) {
      *problem = who() + ", a thread waiting at __syncthreads()";
      return false;
    }
    if (g.state != State::at_warp_operation) return false;  // still running: it may arrive
    if (g.mask != f.mask || g.what != f.what) {
      *problem = who() + ", which waits at " + g.what + " with mask " + std::to_string(g.mask);
      return false;
    }
  }
  void* lanes[32] = {};
  for (unsigned lane = 0; lane < 32; ++lane)
    if (f.mask >> lane & 1u) lanes[lane] = run.fibers[base + lane].lane_data;
  f.combine(lanes, f.mask);
  for (unsigned lane = 0; lane < 32; ++lane)
    if (f.mask >> lane & 1u) run.fibers[base + lane].state = State::ready;
  run.warp_waiting[base / 32] -= __builtin_popcount(f.mask);
  return true;
}

// Every group of lanes waiting in the warp at `base` (lanes of one warp may wait in separate
// groups, e.g. two half-warps with their own masks): true if one was released.
bool release_warp(BlockRun& run, size_t base, std::string* problem) {
  const size_t end = std::min(run.fibers.size(), base + 32);
  unsigned tried = 0;  // lanes whose group has been looked at
  for (size_t i = base; i < end; ++i) {
    const Fiber& f = run.fibers[i];
    if (f.state != State::at_warp_operation || (tried >> (i - base) & 1u)) continue;
    for (size_t j = i; j < end; ++j) {  // the lanes of f's group: same operation, same mask
      const Fiber& g = run.fibers[j];
      if (g.state == State::at_warp_operation && g.mask == f.mask && g.what == f.what) tried |= 1u << (j - base);
    }
    std::string group_problem;
    if (release_group(run, base, i, &group_problem)) return true;
    if (problem->empty()) *problem = group_problem;
  }
  return false;
}

// Releases the warp operations whose threads have all arrived; false if none could be.
bool release_warp_operations(BlockRun& run, std::string* problem) {
  bool released = false;
  for (size_t base = 0; base < run.fibers.size(); base += 32) {
    std::string warp_problem;
    while (release_warp(run, base, &warp_problem)) {  // a warp may hold several groups
      released = true;
      warp_problem.clear();
    }
    if (!released && !warp_problem.empty() && problem->empty()) *problem = warp_problem;
  }
  return released;
}

// Threads run in index order, or in reverse when `reverse` (run_grid alternates it from block to
// block and from one launch of a kernel to the next). A race inside a block (a read of another
// thread's write with no barrier between) then sees the write missing in one of the two orders,
// whichever thread comes first on the GPU.
void run_block(BlockRun& run, const LaunchConfig& config, uint3 block, bool reverse) {
  const dim3 bd = config.block;
  const size_t threads = size_t(bd.x) * bd.y * bd.z;
  if (run.fibers.size() != threads) run.fibers.resize(threads);
  run.warp_waiting.assign((threads + 31) / 32, 0);
  run.warp_tokens.clear();
  run.fault.clear();
  // Dynamic shared memory starts as NaN bytes, as uninitialised memory that a test can notice.
  std::memset(run.shared, 0xff, run.shared_bytes);
  for (size_t i = 0; i < threads; ++i) {
    Fiber& f = run.fibers[i];
    f.state = State::ready;
    f.thread = uint3{unsigned(i % bd.x), unsigned(i / bd.x % bd.y), unsigned(i / (size_t(bd.x) * bd.y))};
    f.stack = stack_for(i);
    f.race_fiber = t_stacks.race_fibers[i];
    f.barriers_passed = 0;
    f.sp = initial_stack(f.stack);
  }
  for (;;) {
    bool any_ran = false;
    for (size_t k = 0; k < threads; ++k) {
      const size_t i = reverse ? threads - 1 - k : k;
      Fiber& f = run.fibers[i];
      if (f.state != State::ready) continue;
      run.current = i;
      g_coordinates = Coordinates{f.thread, block, uint3{config.block.x, config.block.y, config.block.z},
                                  uint3{config.grid.x, config.grid.y, config.grid.z}};
      switching_to(f.race_fiber, true);  // the scheduler's writes (and earlier blocks') come first
      starting_switch(&run.scheduler_fake_stack, f.stack, kStackBytes);
      bam_emu_switch(&run.scheduler_sp, f.sp);
      finished_switch(run.scheduler_fake_stack);
      any_ran = true;
      if (!run.fault.empty()) return;
    }
    if (any_ran) continue;
    size_t done = 0, at_barrier = 0;
    for (const Fiber& f : run.fibers) {
      done += f.state == State::done;
      at_barrier += f.state == State::at_block_barrier;
    }
    if (done == threads) {
      acquire(&run.block_end);  // the next block, launch or host code sees all this block did
      return;
    }
    std::string problem;
    bool released = false;
    try {
      released = release_warp_operations(run, &problem);
    } catch (const std::exception& e) {
      problem = e.what();
    }
    if (released) continue;  // a problem elsewhere may yet resolve
    if (!problem.empty()) {
      run.fault = problem;
      return;
    }
    if (at_barrier + done == threads) {
      for (Fiber& f : run.fibers)
        if (f.state == State::at_block_barrier) f.state = State::ready;
      continue;
    }
    run.fault = "deadlock: " + std::to_string(at_barrier) + " threads wait at __syncthreads() while others wait at a "
                "warp operation that cannot complete";
    return;
  }
}

std::mutex g_launch_mutex;  // one launch at a time: __shared__ variables are static

}  // namespace

void sync_block() {
  BlockRun* run = t_block;
  if (!run) throw std::logic_error("CUDA emulator: __syncthreads() was called outside a kernel");
  Fiber& self = run->fibers[run->current];
  char* token = &run->barrier_tokens[self.barriers_passed++ % 2];
  release(token);
  suspend(State::at_block_barrier);
  acquire(token);
}

void warp_collective(unsigned mask, const char* what, void* lane_data, Combine combine) {
  BlockRun* run = t_block;
  if (!run) throw std::logic_error("CUDA emulator: a warp operation was called outside a kernel");
  Fiber& self = run->fibers[run->current];
  const unsigned lane = static_cast<unsigned>(run->current % 32);
  if (!(mask >> lane & 1u)) {
    run->fault = "thread " + str(self.thread) + " calls " + what + " with a mask that leaves out its own lane";
    suspend(State::at_warp_operation);  // never resumed: the block stops at the fault
  }
  const size_t base = run->current / 32 * 32;
  // The operation's token: that of a lane already waiting at it (same operation, same mask), or
  // a new one for the first to arrive.
  self.warp_token = nullptr;
  for (size_t i = base; i < std::min(run->fibers.size(), base + 32) && !self.warp_token; ++i) {
    const Fiber& g = run->fibers[i];
    if (g.state == State::at_warp_operation && g.mask == mask && g.what == what) self.warp_token = g.warp_token;
  }
  if (!self.warp_token) self.warp_token = &run->warp_tokens.emplace_back();
  release(self.warp_token);
  self.mask = mask;
  self.what = what;
  self.lane_data = lane_data;
  self.combine = combine;
  self.state = State::at_warp_operation;
  // The last lane to arrive runs the operation and carries on without a switch.
  std::string problem;
  if (++run->warp_waiting[base / 32] == __builtin_popcount(mask)) release_warp(*run, base, &problem);
  if (self.state == State::at_warp_operation) to_scheduler(*run, self);
  acquire(self.warp_token);
}

unsigned char* dynamic_shared_memory() { return t_block ? t_block->shared : nullptr; }

void run_grid(const void* kernel, const LaunchConfig& config, const std::function<void()>& body) {
  const dim3 g = config.grid, b = config.block;
  auto where = [&] { return std::string(config.file) + ":" + std::to_string(config.line); };  // for reports
  const size_t threads = size_t(b.x) * b.y * b.z;
  cudaError_t bad = cudaSuccess;
  std::string why;
  if (threads == 0 || threads > kMaxThreadsPerBlock || b.z > 64 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 ||
      g.z > 65535 || g.x > 2147483647u) {
    bad = cudaErrorInvalidConfiguration;
    why = "grid " + str(g) + ", block " + str(b);
  } else if (config.shared_bytes > std::max(kDefaultSharedLimit, shared_limit(kernel))) {
    bad = cudaErrorInvalidValue;
    why = std::to_string(config.shared_bytes) + " bytes of dynamic shared memory (above 48 KiB needs "
          "cudaFuncAttributeMaxDynamicSharedMemorySize, at most 227 KiB)";
  }
  if (bad != cudaSuccess) {
    std::fprintf(stderr, "CUDA emulator: launch at %s refused: %s\n", where().c_str(), why.c_str());
    set_launch_error(bad);
    return;
  }
  complete_held_copies();  // a kernel may read what a held-back copy writes (or write what it reads)
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  // Per kernel, so that a single-block kernel alternates between the two orders from one launch
  // to its next whatever else runs between them (guarded by g_launch_mutex).
  static std::map<const void*, uint64_t> launches;
  const uint64_t launch = launches[kernel]++;
  BlockRun run;
  run.body = &body;
  run.config = &config;
#if BAM_EMU_ADDRESS_SANITIZER || BAM_EMU_THREAD_SANITIZER
  static const bool named = (__sanitizer_set_death_callback(name_the_thread_at_death), true);
  (void)named;
#endif
  run.scheduler_race_fiber = current_race_fiber();
  run.shared_storage.resize(config.shared_bytes + 128);
  run.shared = run.shared_storage.data() + (128 - reinterpret_cast<uintptr_t>(run.shared_storage.data()) % 128);
  run.shared_bytes = config.shared_bytes;
#if BAM_EMU_ADDRESS_SANITIZER
  // Past either end of the dynamic shared memory is unaddressable, as on a GPU.
  struct PoisonedPadding {
    std::vector<unsigned char>& storage;
    PoisonedPadding(std::vector<unsigned char>& storage, const unsigned char* shared, size_t bytes) : storage(storage) {
      ASAN_POISON_MEMORY_REGION(storage.data(), shared - storage.data());
      ASAN_POISON_MEMORY_REGION(shared + bytes, storage.data() + storage.size() - (shared + bytes));
    }
    ~PoisonedPadding() { ASAN_UNPOISON_MEMORY_REGION(storage.data(), storage.size()); }
  } padding(run.shared_storage, run.shared, run.shared_bytes);
#endif
  struct CurrentBlock {  // t_block names `run` while it runs, whatever leaves this scope
    BlockRun* outer = t_block;
    explicit CurrentBlock(BlockRun* run) { t_block = run; }
    ~CurrentBlock() { t_block = outer; }
  } current(&run);
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        run_block(run, config, uint3{x, y, z}, (launch + x + y + z) % 2 == 1);
        if (!run.fault.empty()) {
          abandon_fibers(run);
          throw std::runtime_error("CUDA emulator: kernel launched at " + where() + ", grid " + str(g) + ", block " +
                                   str(b) + ": in block (" + std::to_string(x) + "," + std::to_string(y) + "," +
                                   std::to_string(z) + "), " + run.fault);
        }
      }
  check_device_guards(config.file, config.line);
}

// ---- the warp operations' arithmetic ----------------------------------------------------------

void combine_shuffle(void* const* lanes, unsigned mask) {
  for (int lane = 0; lane < 32; ++lane) {
    auto* me = static_cast<ShuffleLane*>(lanes[lane]);
    if (!me) continue;
    const int width = me->width;
    if (width <= 0 || width > 32 || (width & (width - 1)))
      throw std::runtime_error("CUDA emulator: a shuffle of width " + std::to_string(width) +
                               " (a power of 2 up to 32)");
    const int base = lane / width * width;
    int source = lane;  // a source outside the lane's segment gives the lane its own value
    switch (me->kind) {
      case ShuffleKind::index: source = base + (me->argument & (width - 1)); break;
      case ShuffleKind::up: source = lane - me->argument >= base ? lane - me->argument : lane; break;
      case ShuffleKind::down: source = lane + me->argument < base + width ? lane + me->argument : lane; break;
      case ShuffleKind::xor_: {
        const int partner = lane ^ (me->argument & 31);  // an earlier segment may be read, a later one not
        source = partner < base + width ? partner : lane;
        break;
      }
    }
    if (!(mask >> source & 1u))
      throw std::runtime_error("CUDA emulator: lane " + std::to_string(lane) + " shuffles from lane " +
                               std::to_string(source) + ", which its mask leaves out");
    me->result = static_cast<ShuffleLane*>(lanes[source])->value;
  }
}

namespace {

template <typename S>
float element(uint32_t pair, int half) {
  const uint16_t bits = static_cast<uint16_t>(half ? pair >> 16 : pair & 0xffffu);
  if constexpr (std::is_same_v<S, __nv_bfloat16>) {
    __nv_bfloat16_raw raw;
    raw.x = bits;
    return __bfloat162float(__nv_bfloat16(raw));
  } else {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  }
}

// The fragment layout of PTX's "Matrix Fragments for mma.m16n8k16" (kernels/cuda/mma_layout.h
// states it too; the emulator keeps its own copy so that a mistake there is not repeated here).
template <typename S>
void combine_mma(void* const* lanes) {
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto* me = static_cast<const MmaLane*>(lanes[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
      A[row][col] = element<S>(me->a[r], 0);
      A[row][col + 1] = element<S>(me->a[r], 1);
    }
    for (int r = 0; r < 2; ++r) {
      const int row = 2 * t + 8 * r, col = g;
      B[row][col] = element<S>(me->b[r], 0);
      B[row + 1][col] = element<S>(me->b[r], 1);
    }
    for (int e = 0; e < 4; ++e) C[g + 8 * (e / 2)][2 * t + e % 2] = me->c[e];
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* me = static_cast<const MmaLane*>(lanes[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e / 2), col = 2 * t + e % 2;
      float sum = C[row][col];
      for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
      me->c[e] = sum;
    }
  }
}

}  // namespace

void combine_mma_bf16(void* const* lanes, unsigned) { combine_mma<__nv_bfloat16>(lanes); }
void combine_mma_f16(void* const* lanes, unsigned) { combine_mma<__half>(lanes); }

}  // namespace bam::emu
