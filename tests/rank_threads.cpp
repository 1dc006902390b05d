// run_ranks and free_port: see rank_threads.h.
#include "tests/rank_threads.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <exception>
#include <memory>
#include <thread>
#include <vector>

#include "engine/distributed.h"
#include "engine/tcp_socket.h"
#include "tests/support.h"

namespace bam::test {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t length = sizeof(a);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

void run_ranks(int world, const std::function<void(Communicator&)>& body) {
  run_ranks(
      world, [](LaunchEnvironment&) {}, body);
}

void run_ranks(int world, const std::function<void(LaunchEnvironment&)>& configure,
               const std::function<void(Communicator&)>& body) {
  // Rank 0 takes over a socket listening already, as the --nproc_per_node launcher's does: a port
  // picked free and bound later could be taken in between by another test process.
  int port = 0;
  tcp::Socket listener = tcp::listen_on_loopback(world, &port);
  REQUIRE(listener.fd() >= 0);
  const int listen_fd = listener.release();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        LaunchEnvironment env;
        env.rank = r;
        env.world_size = world;
        env.master_port = port;
        env.connect_timeout_seconds = 60;
        if (r == 0) env.listen_fd = listen_fd;
        configure(env);
        std::shared_ptr<Communicator> group = connect_tcp(env);
        body(*group);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace bam::test
