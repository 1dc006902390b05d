// The stop request's signal handlers (bam/stop_signals.h). A handler may only make async-signal-safe
// calls: it stores the signal and the time, and writes one line with write(2).
#include "bam/stop_signals.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace bam {
namespace {

std::atomic<int> g_signal{0};                 // the first stop signal, 0 before it
std::atomic<int64_t> g_first_nanoseconds{0};  // when it came (CLOCK_MONOTONIC)
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free,
              "a signal handler may only touch lock-free atomics");

int64_t monotonic_nanoseconds() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}

void write_text(const char* text) { [[maybe_unused]] ssize_t n = ::write(STDOUT_FILENO, text, std::strlen(text)); }

void on_stop_signal(int signal) {
  const int saved_errno = errno;  // the interrupted code may be about to read it
  const int64_t now = monotonic_nanoseconds();
  int expected = 0;
  if (g_signal.compare_exchange_strong(expected, signal)) {
    g_first_nanoseconds = now;
    write_text(signal == SIGINT   ? "\nSIGINT: stopping after this step and saving a checkpoint (press Ctrl-C again to "
                                    "stop at once, without saving)\n"
               : signal == SIGHUP ? "\nSIGHUP (the terminal closed?): stopping after this step and saving a checkpoint "
                                    "(start it with nohup to keep it running)\n"
                                  : "\nSIGTERM: stopping after this step and saving a checkpoint (send it again to "
                                    "stop at once, without saving)\n");
  } else if (const int64_t first = g_first_nanoseconds.load(); first != 0 && now - first >= 1000000000) {
    // (first is 0 for the moment between the first signal's exchange and its time's store, when
    // a second one on another thread is the same request.)
    write_text("\nStopped at once: nothing saved since the last checkpoint\n");
    ::signal(signal, SIG_DFL);
    ::raise(signal);  // delivered when this handler returns
  }
  errno = saved_errno;
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  action.sa_flags = SA_RESTART;  // a read or a wait the signal interrupts goes on
  ::sigemptyset(&action.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP})
    // A shell starts a script's background commands with SIGINT ignored, so that a Ctrl-C meant
    // for the script spares them; nohup ignores SIGHUP.
    if (!started_ignoring(s)) ::sigaction(s, &action, nullptr);
}

bool started_ignoring(int signal) {
  struct sigaction before {};
  return ::sigaction(signal, nullptr, &before) == 0 && before.sa_handler == SIG_IGN;
}

int stop_signal() { return g_signal.load(); }

void clear_stop_signal() {
  g_first_nanoseconds = 0;
  g_signal = 0;
}

const char* stop_signal_name(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGHUP) return "SIGHUP";
  static thread_local char text[32];
  std::snprintf(text, sizeof text, "signal %d", signal);
  return text;
}

void exit_by_signal(int signal) {
  std::fflush(nullptr);
  ::signal(signal, SIG_DFL);
  sigset_t set;
  ::sigemptyset(&set);
  ::sigaddset(&set, signal);
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  ::raise(signal);
  ::_exit(128 + signal);  // a signal whose default action does not end the process
}

}  // namespace bam
