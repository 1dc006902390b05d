// The local launcher (tools/common/launcher.h): open the ranks' meeting port, fork, exec this
// program with the rank's variables (rank 0 also with the port's listening socket).
// Everything the children need is built before the first fork (between fork and exec a child only
// makes async-signal-safe calls). A child dies with the launcher (PR_SET_PDEATHSIG); a signal that
// stops the launcher is passed on to the ranks; the first rank that fails takes the others down.
#include "tools/common/launcher.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bam/stop_signals.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/tcp_socket.h"
#include "engine/whole_number.h"
#include "kernels/cpu/parallel.h"

extern char** environ;

namespace bam::tool {
namespace {

// The ranks' process ids, for the signal handler (which may only read them).
constexpr int kMaxRanks = 1024;
pid_t g_children[kMaxRanks];
volatile sig_atomic_t g_started = 0;
volatile sig_atomic_t g_told_to_stop = 0;  // the ranks were signalled: their exits are not failures of their own
volatile sig_atomic_t g_signal_received = 0;  // the signal that stopped the launcher (0: none)

// (A rank already waited for has 0 in its place, which kill() must never get: it would signal the
// whole process group.)
void signal_children(int signal) {
  g_told_to_stop = 1;
  for (int i = 0; i < g_started; ++i)
    if (g_children[i] > 0) ::kill(g_children[i], signal);
}

// The handler of the signals that stop the launcher: the ranks get them too.
void pass_signal_on(int signal) {
  g_signal_received = signal;
  signal_children(signal);
}

void stop_children() { signal_children(SIGTERM); }

}  // namespace

int ranks_per_node(const std::string& text, const std::string& resolved_device) {
  const bool on_gpu = resolved_device.rfind("cuda", 0) == 0;
  if (text == "gpu" || (text == "auto" && on_gpu)) {
    BAM_CHECK(cuda::is_available(), "--nproc_per_node {}: no GPU answers: {}", text, cuda::unavailable_reason());
    return cuda::device_count();
  }
  if (text == "cpu" || text == "auto") return std::min(cpu::available_cores(), kMaxRanks);
  const std::optional<int64_t> n = parse_whole_number(text, 1, kMaxRanks);
  BAM_CHECK(n.has_value(), "--nproc_per_node {}: expected a count from 1 to {}, or auto, cpu or gpu", text, kMaxRanks);
  return static_cast<int>(*n);
}

int run_local_ranks(int ranks, char** argv) {
  BAM_CHECK(ranks >= 1 && ranks <= kMaxRanks, "--nproc_per_node {}: expected 1 to {}", ranks, kMaxRanks);
  // The port listens from before the first rank starts until rank 0, which takes the socket over
  // (BAM_LISTEN_FD), accepts the others: no other program can take it in between, and a rank that
  // connects early waits in the queue instead of being refused.
  int port = 0;
  tcp::Socket listener = tcp::listen_on_loopback(ranks, &port);
  BAM_CHECK(listener.fd() >= 0, "--nproc_per_node: cannot listen on a free port of 127.0.0.1: {}",
            std::strerror(errno));
  // Each rank's environment: this one's, with torchrun's variables and BAM_LAUNCHED_RANK set.
  const char* names[] = {"RANK=",
                         "LOCAL_RANK=",
                         "WORLD_SIZE=",
                         "LOCAL_WORLD_SIZE=",
                         "MASTER_ADDR=",
                         "MASTER_PORT=",
                         "BAM_LAUNCHED_RANK=",
                         "BAM_MASTER_PORT=",
                         "BAM_LISTEN_FD=",
                         "TORCHELASTIC_USE_AGENT_STORE=",  // the port is the launcher's
                         "TORCHELASTIC_RUN_ID=",
                         "BAM_RUN_ID="};  // this launch's own, below
  std::vector<std::string> inherited;
  for (char** e = environ; *e != nullptr; ++e) {
    bool ours = false;
    for (const char* name : names) ours = ours || std::strncmp(*e, name, std::strlen(name)) == 0;
    if (!ours) inherited.emplace_back(*e);
  }
  std::vector<std::vector<std::string>> texts(static_cast<size_t>(ranks));
  std::vector<std::vector<char*>> environments(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    std::vector<std::string>& t = texts[static_cast<size_t>(r)];
    t = inherited;
    t.push_back("RANK=" + std::to_string(r));
    t.push_back("LOCAL_RANK=" + std::to_string(r));
    t.push_back("WORLD_SIZE=" + std::to_string(ranks));
    t.push_back("LOCAL_WORLD_SIZE=" + std::to_string(ranks));
    t.push_back("MASTER_ADDR=127.0.0.1");
    t.push_back("MASTER_PORT=" + std::to_string(port));
    // A job key of this launch's own: a rank of another job that reaches the port (two launches on
    // one machine) is turned away rather than counted in, as torchrun's run id does.
    t.push_back(fmt::format("BAM_RUN_ID=launcher-{}-{}", static_cast<long long>(::getpid()), port));
    t.push_back("BAM_LAUNCHED_RANK=1");  // the child sees --nproc_per_node too: it is a rank
    if (r == 0) t.push_back("BAM_LISTEN_FD=" + std::to_string(listener.fd()));
    for (std::string& s : t) environments[static_cast<size_t>(r)].push_back(s.data());
    environments[static_cast<size_t>(r)].push_back(nullptr);
  }
  static const char kExecFailed[] = "--nproc_per_node: cannot start a rank (exec failed)\n";
  std::printf("Starting %d ranks on this machine (MASTER_ADDR=127.0.0.1 MASTER_PORT=%d); rank 0 reports\n", ranks,
              port);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t launcher = ::getpid();
  struct sigaction pass_on {};
  pass_on.sa_handler = pass_signal_on;
  for (int s : {SIGINT, SIGTERM, SIGHUP})
    // One the launcher was started ignoring stays ignored, here and in the ranks, which inherit
    // that through exec (a handler would not be).
    if (!started_ignoring(s)) ::sigaction(s, &pass_on, nullptr);
  for (int r = 0; r < ranks; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int error = errno;
      stop_children();
      fail("--nproc_per_node: cannot start rank {}: {}", r, std::strerror(error));
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the rank ends with the launcher
      if (::getppid() != launcher) ::_exit(1);
      if (r == 0 && ::fcntl(listener.fd(), F_SETFD, 0) != 0) ::_exit(1);  // kept through exec for rank 0 alone
      ::execve("/proc/self/exe", argv, environments[static_cast<size_t>(r)].data());
      [[maybe_unused]] ssize_t n = ::write(2, kExecFailed, sizeof(kExecFailed) - 1);
      ::_exit(127);
    }
    g_children[r] = pid;
    g_started = r + 1;
  }
  listener = tcp::Socket();  // rank 0 holds it now
  // The first failure is the status to report; the other ranks are then stopped (they would stop
  // by themselves once connected, but not while still waiting for a peer that never comes).
  // The failing rank is named here: one killed from outside (the OOM killer's SIGKILL) says
  // nothing itself. The others get a moment to stop by themselves first, their watchers naming the
  // peer they lost, before they are told to.
  int result = 0;
  bool grace = false;  // a rank failed: the others are stopped at stop_at, unless they end first
  auto stop_at = std::chrono::steady_clock::now();
  for (int left = ranks; left > 0;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, grace ? WNOHANG : 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pid == 0) {  // none ended yet, during the grace
      if (std::chrono::steady_clock::now() >= stop_at) {
        stop_children();
        grace = false;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      continue;
    }
    --left;
    int rank = -1;
    for (int i = 0; i < g_started; ++i)
      if (g_children[i] == pid) {
        g_children[i] = 0;
        rank = i;
      }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    // Every rank that fails on its own is named: the one killed from outside may be reaped after
    // a peer that saw it go and stopped first.
    if (code != 0 && !g_told_to_stop) {
      if (WIFSIGNALED(status))
        std::fprintf(stderr, "--nproc_per_node: rank %d (pid %d) was killed by signal %d (%s)\n", rank,
                     static_cast<int>(pid), WTERMSIG(status), ::strsignal(WTERMSIG(status)));
      else
        std::fprintf(stderr, "--nproc_per_node: rank %d (pid %d) exited with status %d\n", rank, static_cast<int>(pid),
                     code);
    }
    if (code != 0 && result == 0) {
      result = code;
      stop_at = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      grace = true;
    }
  }
  // Stopped by a signal that the ranks, once they had saved, ended by too: the launcher ends by it
  // as well, so that a shell running it in a loop stops there (an exit status of 130 would tell the
  // shell that the launcher handled the interrupt, and the loop would go on).
  const int stopped_by = g_signal_received;
  if (stopped_by != 0 && result == 128 + stopped_by) exit_by_signal(stopped_by);
  return result;
}

RankLaunch read_rank_launch(const char* tool, const std::string& nproc_per_node, const std::string& resolved_device,
                            std::optional<int64_t> local_rank) {
  RankLaunch r;
  r.tool_name = tool;
  r.nproc_per_node = ranks_per_node(nproc_per_node, resolved_device);
  const char* world = std::getenv("WORLD_SIZE");
  r.launcher = r.nproc_per_node > 1 && world == nullptr;
  BAM_CHECK(r.nproc_per_node == 1 || r.launcher || std::getenv("BAM_LAUNCHED_RANK") != nullptr,
            "--nproc_per_node {}: this process is already one rank of WORLD_SIZE={}; start the ranks either with "
            "torchrun (or by hand) or with --nproc_per_node, not both",
            r.nproc_per_node, world ? world : "");
  r.launch = launch_environment_from_env();
  if (local_rank && std::getenv("LOCAL_RANK") == nullptr) r.launch.local_rank = static_cast<int>(*local_rank);
  if (local_rank && !r.launch.distributed() && !r.launcher)
    std::printf(
        "note: --local-rank %lld has no effect outside a data-parallel launch (WORLD_SIZE unset or 1); "
        "--device cuda:N picks the GPU\n",
        static_cast<long long>(*local_rank));
  if (r.launch.rank != 0) {
    r.tool_name = fmt::format("{} (rank {})", tool, r.launch.rank);
    if (std::freopen("/dev/null", "w", stdout) == nullptr) fail("rank {}: cannot silence its output", r.launch.rank);
  }
  return r;
}

std::string rank_device(const LaunchEnvironment& launch, const std::string& resolved_device) {
  if (!launch.distributed() || resolved_device != "cuda") return resolved_device;
  return fmt::format("cuda:{}", launch.local_rank % std::max(1, cuda::device_count()));
}

}  // namespace bam::tool
