// The local launcher (tools/common/launcher.h): fork, set the rank's variables, exec this program.
#include "tools/common/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"

namespace bam::tool {
namespace {

// A port the system has free now (rank 0 binds it a moment later).
int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BAM_CHECK(fd >= 0, "--nproc_per_node: cannot open a socket: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length) == 0;
  ::close(fd);
  BAM_CHECK(ok, "--nproc_per_node: cannot find a free port: {}", std::strerror(errno));
  return ntohs(a.sin_port);
}

}  // namespace

int run_local_ranks(int ranks, char** argv) {
  const int port = free_local_port();
  std::printf("Starting %d ranks on this machine (MASTER_ADDR=127.0.0.1 MASTER_PORT=%d); rank 0 reports\n", ranks,
              port);
  std::fflush(stdout);
  std::vector<pid_t> children;
  for (int r = 0; r < ranks; ++r) {
    const pid_t pid = ::fork();
    BAM_CHECK(pid >= 0, "--nproc_per_node: cannot start rank {}: {}", r, std::strerror(errno));
    if (pid == 0) {
      const std::string rank = std::to_string(r), world = std::to_string(ranks), p = std::to_string(port);
      ::setenv("RANK", rank.c_str(), 1);
      ::setenv("LOCAL_RANK", rank.c_str(), 1);
      ::setenv("WORLD_SIZE", world.c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", p.c_str(), 1);
      ::execv("/proc/self/exe", argv);
      std::fprintf(stderr, "--nproc_per_node: cannot start rank %d: %s\n", r, std::strerror(errno));
      std::_Exit(127);
    }
    children.push_back(pid);
  }
  // A rank that fails makes the others stop by themselves (each watches the others' connections);
  // the first failure is the status to report.
  int result = 0;
  for (size_t left = children.size(); left > 0;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    --left;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && result == 0) result = code;
  }
  return result;
}

}  // namespace bam::tool
